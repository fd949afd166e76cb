"""Entry point: ``lct-train`` / ``python -m lct_train.train.main`` (under torchrun or alone).

Arguments are Hydra overrides (``model=tiny stage=causal_ft optim.lr=5e-5``); ``--cfg`` prints
the composed config and exits. A bad config exits with status 2 and one line naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from lct_train.config.store import compose_config, find_conf_dir, one_line_error, to_yaml

CONFIG_ERROR_STATUS = 2
USAGE = """usage: lct-train [--cfg] [key=value | group=option ...]

Hydra overrides over conf/train.yaml ({conf}). Groups: model data optim parallel checkpoint
logging stage memory. Examples:
  lct-train model=tiny data_source=synthetic steps=10
  torchrun --nproc_per_node=8 -m lct_train.train.main model=lct-3b memory=80gb \\
      data.sources='[{{path: /data/scenes}}]'
  lct-train stage=causal_ft stage.init_run=outputs/lct
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
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
