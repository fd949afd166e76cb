"""torchrun worker of ``test_init.py``: sharded safetensors loading on this world size.

``argv``: export path, output path, and the rank whose reads fail (-1: none). Rank 0 saves the
full state dict and every rank the rows it read per tensor (``<out>.rows<R>``, JSON), or every
rank writes the one-line error it raised to ``<out>.rank<R>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lct_train.core import safetensors_io
from lct_train.core.errors import ConfigError, ConversionError
from lct_train.parallel.dist import end_process, shutdown
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
    rows_read: dict[str, int] = {}
    get_rows = safetensors_io.SafetensorsReader.get_rows

    def counted(self, key, start, stop):
        rows_read[key] = rows_read.get(key, 0) + stop - start
        return get_rows(self, key, start, stop)

    if rank != failing_rank:
        safetensors_io.SafetensorsReader.get_rows = counted
    model = sharded_cpu_model(tiny_config())
    try:
        load_safetensors(model, Path(export))
    except ConfigError as err:
        Path(f"{out}.rank{rank}").write_text(str(err))
        shutdown(synchronize=False)
        return
    Path(f"{out}.rows{rank}").write_text(json.dumps(rows_read))
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if rank == 0:
        torch.save(full, out)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    end_process(0)
