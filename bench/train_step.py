"""Train-step benchmark: step time, tokens/s and model TFLOP/s of ``tiny`` / ``small`` (CPU).

Runs the real training step (FSDP2 over a one-rank gloo group, synthetic scenes, fp32 on CPU)
in one process: warm-up steps, then timed steps. Prints one line per model.
``bench/gpu_suite.py`` builds its trainers with ``make_trainer`` and summarises with
``summarise``.

    python bench/train_step.py [--models tiny small] [--steps 10] [--warmup 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch

WARMUP = 3
STEPS = 10
THREADS = 2


def bench_overrides(model: str, steps: int, device: str, run_dir: str) -> list[str]:
    """Hydra overrides of a benchmark run: synthetic scenes, nothing written, no resume."""
    dtype = "float32" if device == "cpu" else "bfloat16"
    return [f"model={model}", "data_source=synthetic", f"steps={steps}", "resume=none",
            f"run_dir={run_dir}", "checkpoint.enabled=false", "logging.console=false",
            "logging.tensorboard=false", "logging.jsonl=false", f"parallel.device={device}",
            f"parallel.param_dtype={dtype}"]


def make_trainer(overrides: Sequence[str]):
    """The real ``Trainer`` of the composed config, in a one-process group."""
    from lct_train.config.store import compose_config
    from lct_train.parallel.dist import init_distributed
    from lct_train.train.trainer import Trainer

    cfg = compose_config(list(overrides))
    return Trainer(cfg, init_distributed(cfg.parallel))


def summarise(records: Sequence[dict]) -> dict:
    """Medians over the timed steps' records (``MetricsLogger.record``); peak memory: the max."""
    def median(key):
        return statistics.median(r[key] for r in records)

    out = {"step_s": median("step_time_s"), "tokens_per_s": median("tokens_per_s"),
           "tflops": median("tflops_per_device"),
           "tokens_per_step": statistics.median(r["tokens_per_s"] * r["step_time_s"]
                                                for r in records),
           "peak_memory_gb": max(r["peak_memory_gb"] for r in records)}
    if all("mfu" in r for r in records):
        out["mfu"] = median("mfu")
    return out


def bench(model: str, steps: int, warmup: int, device: str, extra: list[str]) -> dict:
    overrides = [*bench_overrides(model, warmup + steps, device, f"/tmp/lct-bench-{model}"),
                 "synthetic.scenes_per_batch=2", "synthetic.max_shots=3",
                 "synthetic.max_grid=[4,8,8]", "synthetic.max_text_len=32", *extra]
    records = make_trainer(overrides).train()[warmup:]
    return {"model": model, **summarise(records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=THREADS, help="CPU threads of torch")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"train_step: torch {torch.__version__}, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup}")
    for model in args.models:
        r = bench(model, args.steps, args.warmup, args.device, args.overrides)
        print(f"  {r['model']:>6}: {1000 * r['step_s']:8.1f} ms/step | "
              f"{r['tokens_per_s']:9,.0f} tokens/s | {r['tokens_per_step']:6,.0f} tokens/step | "
              f"{r['tflops']:.4f} model TFLOP/s", flush=True)
    return 0


if __name__ == "__main__":
    from lct_train.parallel.dist import end_process, shutdown

    code = main()
    shutdown()  # the trainers' process group
    end_process(code)
