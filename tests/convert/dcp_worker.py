"""torchrun worker of the DCP export test: writes a training checkpoint the way the trainer does.

Each rank shards the tiny `LCTModel` preset like the trainer (`apply_fsdp`: every block, then
the root; gloo, CPU) and saves the design.md §6 layout:
`<out>/checkpoints/step-00000007/` with DCP top-level keys `model`, `ema`, `optimizer`,
`train_state`, plus `lct_meta.json`; rank 0 also writes the full weights as the reference.

    torchrun --standalone --nproc_per_node 2 tests/convert/dcp_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh

from lct_train.model.mmdit import LCTModel
from lct_train.parallel.dist import end_process, shutdown
from lct_train.parallel.parallelize import apply_fsdp, mixed_precision
from tests.testutils import tiny_config

STEP = 7
EMA_OFFSET = 0.5  # makes the EMA weights differ from the raw ones
def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("dp_shard",))
    cfg = tiny_config()
    torch.manual_seed(0)
    model = LCTModel(cfg)
    ema = LCTModel(cfg)
    with torch.no_grad():
        for p, q in zip(model.parameters(), ema.parameters()):
            q.copy_(p + EMA_OFFSET)
    full = {k: v.clone() for k, v in model.state_dict().items()}
    full_ema = {k: v.clone() for k, v in ema.state_dict().items()}
    for m in (model, ema):  # every dual, single and refiner block, then the root
        apply_fsdp(m, mesh, mixed_precision("float32", "float32"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = {
        "model": get_model_state_dict(model),
        "ema": get_model_state_dict(ema),
        "optimizer": get_optimizer_state_dict(model, optimizer),
        "train_state": {"step": STEP},
    }
    ckpt = out / "checkpoints" / f"step-{STEP:08d}"
    dcp.save(state, checkpoint_id=str(ckpt))
    gathered = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    if rank == 0:
        meta = {
            "config": {"model": cfg.to_dict()},
            "step": STEP,
            "world_size": dist.get_world_size(),
        }
        (ckpt / "lct_meta.json").write_text(json.dumps(meta))
        save_file(full, str(out / "reference_model.safetensors"))
        save_file(full_ema, str(out / "reference_ema.safetensors"))
        assert all(torch.equal(gathered[k], full[k]) for k in full), "FSDP gather differs"
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    end_process(0)
