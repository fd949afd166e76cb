"""``lct-estimate`` / ``python -m lct_train.estimate.cli``: peak GPU memory per rank of a run.

Arguments: the training's Hydra overrides plus ``estimate.*`` keys (``estimate.world_size=8
estimate.tokens=131072 estimate.shots=9``, or ``estimate.grid=[16,30,30]``; ``estimate.gpu_gb``
or a ``memory=`` preset). Exit status 0 when the run fits, 1 when it does not, 2 when no
estimate can be made (one line naming the key).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from lct_train.config.store import compose_config, one_line_error

CONFIG_ERROR_STATUS = 2
DOES_NOT_FIT_STATUS = 1
USAGE = """usage: lct-estimate [key=value | group=option ...] estimate.world_size=N
                    (estimate.tokens=T estimate.shots=S | estimate.grid=[F,H,W] estimate.shots=S)

Peak memory per rank of the training run the overrides describe, from the real model and
parallelize on fake tensors in a fake process group of N ranks. Examples:
  lct-estimate model=lct-3b memory=80gb estimate.world_size=8 estimate.tokens=131072 estimate.shots=9
  lct-estimate model=hunyuan-video memory=80gb estimate.gpu_gb=80 estimate.world_size=8 \\
      estimate.grid=[8,30,30] estimate.shots=9
estimate.* keys: world_size tokens shots with_global text_len frame grid gpu_gb headroom steps
attention (src/lct_train/estimate/config.py).
The largest scene that fits: python -m lct_train.estimate.search (same arguments, no scene).
"""


def prepare(args: Sequence[str]):
    """``(run config, estimate config, GPU bytes)``; raises on any bad key (one-line errors)."""
    from lct_train.estimate import config

    ours, training = config.split_args(list(args))
    est = config.parse(ours)
    cfg = compose_config(training)
    check_parallel(cfg, est)
    return cfg, est, config.gpu_bytes(est, cfg.memory)


def estimate(args: Sequence[str]) -> dict:
    """The result dict (raises ``ConfigError`` when no estimate can be made)."""
    from lct_train.estimate import report, run

    cfg, est, gpu = prepare(args)
    run.fake_process_group(est.world_size)
    try:
        measured = run.measure(cfg, est)
    finally:
        run.shutdown()
    return report.summary(cfg, est, measured, gpu, model_name(args))


def model_name(args: Sequence[str]) -> str:
    names = [a.split("=", 1)[1] for a in args if a.startswith("model=")]
    return names[-1] if names else "default"


def check_parallel(cfg, est) -> None:
    """What the mesh or the simulated kernel cannot take, named before any model is built
    (``parallel.sp_degree`` against the heads is the training config's own check)."""
    from lct_train.core.errors import ConfigError

    sp = cfg.parallel.sp_degree
    if est.world_size % sp:
        raise ConfigError("parallel.sp_degree", f"{sp} does not divide "
                          f"estimate.world_size={est.world_size}")
    if cfg.stage.mask == "isolated" and est.attention == "flash-varlen":
        raise ConfigError("estimate.attention", "flash-varlen cannot express stage.mask=isolated "
                          "(two key intervals per row): estimate it with a bidirectional or "
                          "causal mask (the same memory) or estimate.attention=reference")


def command(argv: Sequence[str] | None, usage: str, name: str, run: Callable[[list[str]], int],
            check: Callable[[list[str]], object]) -> int:
    """``--help``, else ``run(args)``'s exit status. A failure is one line naming the key (exit
    2) when it is a ``ConfigError`` or ``check(args)`` (composition, validation) fails too; any
    other failure is a bug inside the estimate and keeps its traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        return 0
    from lct_train.core.errors import ConfigError

    try:
        return run(args)
    except Exception as err:
        if not isinstance(err, ConfigError) and _passes(check, args):
            raise
        print(f"{name}: error: {one_line_error(err)}", file=sys.stderr)
        return CONFIG_ERROR_STATUS


def _estimate_and_print(args: list[str]) -> int:
    from lct_train.estimate.report import render

    result = estimate(args)
    print(render(result))
    return 0 if result["fits"] else DOES_NOT_FIT_STATUS


def main(argv: Sequence[str] | None = None) -> int:
    return command(argv, USAGE, "lct-estimate", _estimate_and_print, prepare)


def _passes(check: Callable[[list[str]], object], args: list[str]) -> bool:
    try:
        check(args)
    except Exception:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
