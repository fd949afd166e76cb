"""Entry point: ``lct-train`` / ``python -m lct_train.train.main`` (under torchrun or alone).

Arguments are Hydra overrides (``model=tiny stage=causal_ft optim.lr=5e-5``); ``--cfg`` prints
the composed config and exits. A bad config exits with status 2 and one line naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lct_train.config.store import compose_config, find_conf_dir, one_line_error, to_yaml
from lct_train.core import exits

USAGE = """usage: lct-train [--cfg] [key=value | group=option ...]

Hydra overrides over conf/train.yaml ({conf}). Groups: model data optim parallel checkpoint
logging stage memory finetune. Examples:
  lct-train model=tiny data_source=synthetic steps=10
  torchrun --nproc_per_node=8 -m lct_train.train.main model=lct-3b memory=80gb \\
      data.sources='[{{path: /data/scenes}}]'
  lct-train stage=causal_ft stage.init_run=outputs/lct
  lct-train finetune=lora finetune.rank=32 stage.init_from=/path/model.safetensors
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE.format(conf=find_conf_dir()))
        return 0
    print_only = "--cfg" in args
    overrides = [a for a in args if a != "--cfg"]
    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg = compose_config(overrides)
    except Exception as err:  # composition / validation: one line, then exit
        return exits.refuse(f"lct-train: config error: {one_line_error(err)}", say=rank == 0)
    if print_only:
        print(to_yaml(cfg))
        return 0
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank{rank}] %(levelname)s %(name)s: %(message)s")
    return run(cfg)


def run(cfg) -> int:
    """One training run on this rank. Every refused start and every run error ends in one line
    (``core.exits``): a config error from the main rank, a run error from the rank it hit, and
    from a rank whose collective lost that peer, a line saying so (no traceback anywhere)."""
    from lct_train.core.errors import ConfigError
    from lct_train.parallel.dist import init_distributed, shutdown

    world, finished = None, False
    rank = int(os.environ.get("RANK", "0"))
    try:
        world = init_distributed(cfg.parallel)
        from lct_train.train.trainer import Trainer

        Trainer(cfg, world).train()
        finished = True
    except ConfigError as err:  # the same on every rank: said once, recorded by each
        return exits.refuse(f"lct-train: config error: {err}", say=rank == 0)
    except run_errors() as err:  # a stop the project explains, from the rank it hit
        return exits.refuse(f"lct-train: rank {rank}: {error_kind(err)}: {error_summary(err)}")
    except Exception as err:  # the environment or a peer rank: one line; a bug: its traceback
        return exits.refuse_fault(f"lct-train: rank {rank}", err)
    finally:
        shutdown(synchronize=finished)
    return exits.OK


def run_errors() -> tuple[type[BaseException], ...]:
    """The errors that stop a run for a reason the message states (bad data, non-finite loss)."""
    from lct_train.data.loader import LoaderStateMismatchError
    from lct_train.data.stream import EmptyDatasetError
    from lct_train.data.worker import DataQualityError
    from lct_train.train.checkpoint import CheckpointWriteError
    from lct_train.train.trainer import NonFiniteLossError

    return (DataQualityError, EmptyDatasetError, LoaderStateMismatchError, NonFiniteLossError,
            CheckpointWriteError)


def error_kind(err: BaseException) -> str:
    kinds = {"NonFiniteLossError": "stopped", "CheckpointWriteError": "checkpoint error"}
    return kinds.get(type(err).__name__, "data error")


def error_summary(err: BaseException) -> str:
    """The error's own message on one line; an error re-raised from a DataLoader worker carries
    the worker's traceback, whose last line is that message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    for prefix in (f"{type(err).__module__}.{type(err).__name__}: ", f"{type(err).__name__}: "):
        last = last.removeprefix(prefix)
    return last


def cli() -> NoReturn:
    """``lct-train`` and ``python -m lct_train.train.main``: `main`, then the process ends
    without the interpreter's finalisation (`lct_train.parallel.dist.end_process`)."""
    from lct_train.parallel.dist import run_then_end

    run_then_end(main)


if __name__ == "__main__":
    cli()
