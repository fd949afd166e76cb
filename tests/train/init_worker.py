"""torchrun worker of ``test_init.py``: meta build -> parallelize -> materialize -> scratch init
on this world size; rank 0 saves the full state dict to ``argv[1]``."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import yaml
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lct_train.model.config import ModelConfig
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import init_sharded, materialize, parallelize

SEED = 3
TINY = Path(__file__).parents[2] / "conf" / "model" / "tiny.yaml"
PARALLEL = SimpleNamespace(activation_checkpoint="full", compile=False, param_dtype="float32",
                           reduce_dtype="float32", reshard_after_forward=True)


def tiny_config() -> ModelConfig:
    return ModelConfig.from_dict(yaml.safe_load(TINY.read_text()))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    mesh = build_mesh("cpu", mesh_shape(dist.get_world_size(), 1, -1, 1))
    with torch.device("meta"):
        model = LCTModel(tiny_config())
    model = materialize(parallelize(model, mesh, PARALLEL), torch.device("cpu"))
    init_sharded(model, SEED)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if dist.get_rank() == 0:
        torch.save(full, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
