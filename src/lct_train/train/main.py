"""Entry point: ``lct-train`` / ``python -m lct_train.train.main`` (under torchrun or alone).

Arguments are Hydra overrides (``model=tiny stage=causal_ft optim.lr=5e-5``); ``--cfg`` prints
the composed config and exits. A bad config exits with status 2 and one line naming the key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from lct_train.config.store import compose_config, find_conf_dir, one_line_error, to_yaml

CONFIG_ERROR_STATUS = 2
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
        if rank == 0:
            print(f"lct-train: config error: {one_line_error(err)}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    if print_only:
        print(to_yaml(cfg))
        return 0
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank{rank}] %(levelname)s %(name)s: %(message)s")
    return run(cfg)


def run(cfg) -> int:
    from lct_train.core.errors import ConfigError
    from lct_train.parallel.dist import init_distributed, shutdown
    from lct_train.train.trainer import Trainer

    world = None
    try:
        world = init_distributed(cfg.parallel)
        Trainer(cfg, world).train()
    except ConfigError as err:
        if world is None or world.is_main:
            print(f"lct-train: config error: {err}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    except run_errors() as err:  # a stop the project explains: one line, from the rank it hit
        rank = world.rank if world is not None else int(os.environ.get("RANK", "0"))
        line = f"lct-train: rank {rank}: {error_kind(err)}: {error_summary(err)}"
        print(line, file=sys.stderr, flush=True)
        record_for_torchrun(line)
        return CONFIG_ERROR_STATUS
    finally:
        shutdown()
    return 0


def run_errors() -> tuple[type[BaseException], ...]:
    """The errors that stop a run for a reason the message states (bad data, non-finite loss)."""
    from lct_train.data.loader import LoaderStateMismatchError
    from lct_train.data.stream import EmptyDatasetError
    from lct_train.data.worker import DataQualityError
    from lct_train.train.trainer import NonFiniteLossError

    return DataQualityError, EmptyDatasetError, LoaderStateMismatchError, NonFiniteLossError


def error_kind(err: BaseException) -> str:
    return "stopped" if type(err).__name__ == "NonFiniteLossError" else "data error"


def error_summary(err: BaseException) -> str:
    """The error's own message on one line; an error re-raised from a DataLoader worker carries
    the worker's traceback, whose last line is that message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    for prefix in (f"{type(err).__module__}.{type(err).__name__}: ", f"{type(err).__name__}: "):
        last = last.removeprefix(prefix)
    return last


def record_for_torchrun(line: str) -> None:
    """Under torchrun, the worker's error file: torchrun's closing failure report then shows
    ``line`` as this rank's error instead of "To enable traceback see ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": line,
                        "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError), open(path, "w") as f:
        json.dump(data, f)


if __name__ == "__main__":
    sys.exit(main())
