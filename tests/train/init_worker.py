"""torchrun worker of ``test_init.py``: meta build -> parallelize -> materialize -> scratch init
on this world size; rank 0 saves the full state dict to ``argv[1]``."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lct_train.config.schema import ParallelConfig
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.dist import end_process, shutdown
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import init_sharded, materialize, parallelize
from tests.testutils import tiny_config

SEED = 3
PARALLEL = ParallelConfig(activation_checkpoint="full", param_dtype="float32", reduce_dtype="float32")


def sharded_cpu_model(model_cfg) -> LCTModel:
    """``model_cfg`` built on the meta device and FSDP-sharded over this gloo world (storage
    uninitialised): the start of every worker of the init tests and bench/init_read_memory."""
    mesh = build_mesh("cpu", mesh_shape(dist.get_world_size(), 1, -1, 1))
    with torch.device("meta"):
        model = LCTModel(model_cfg)
    return materialize(parallelize(model, mesh, PARALLEL), torch.device("cpu"))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    model = sharded_cpu_model(tiny_config())
    init_sharded(model, SEED)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if dist.get_rank() == 0:
        torch.save(full, out)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
    end_process(0)
