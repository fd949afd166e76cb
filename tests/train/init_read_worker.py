"""torchrun worker of ``test_init.py``: sharded safetensors loading on this world size.

``argv``: export path, output path, and the rank whose reads fail (-1: none). Rank 0 saves the
full state dict, or every rank writes the one-line error it raised to ``<out>.rank<R>``.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lct_train.core import safetensors_io
from lct_train.core.errors import ConfigError, ConversionError
from lct_train.train.init_weights import load_safetensors
from tests.testutils import tiny_config
from tests.train.init_worker import sharded_cpu_model


def main(export: str, out: str, failing_rank: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == failing_rank:
        def broken(self, key, start, stop):
            raise ConversionError(f"cannot read {key}: injected read failure")

        safetensors_io.SafetensorsReader.get_rows = broken
    model = sharded_cpu_model(tiny_config())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_safetensors(model, Path(export))
    except ConfigError as err:
        Path(f"{out}.rank{rank}").write_text(str(err))
        dist.destroy_process_group()
        return
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(f"{out}.rss{rank}").write_text(f"{rss_before} {rss}")
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if rank == 0:
        torch.save(full, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
