"""Train-step benchmark: step time, tokens/s and model TFLOP/s of ``tiny`` / ``small`` (CPU).

Runs the real training step (FSDP2 over a one-rank gloo group, synthetic scenes, fp32 on CPU)
in one process: warm-up steps, then timed steps. Prints one line per model.

    python bench/train_step.py [--models tiny small] [--steps 10] [--warmup 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

WARMUP = 3
STEPS = 10
THREADS = 2


def bench(model: str, steps: int, warmup: int, device: str, extra: list[str]) -> dict:
    from lct_train.config.store import compose_config
    from lct_train.parallel.dist import init_distributed
    from lct_train.train.trainer import Trainer

    dtype = "float32" if device == "cpu" else "bfloat16"
    cfg = compose_config([
        f"model={model}", "data_source=synthetic", f"steps={warmup + steps}", "resume=none",
        f"run_dir=/tmp/lct-bench-{model}", "checkpoint.enabled=false", "logging.console=false",
        "logging.tensorboard=false", "logging.jsonl=false", f"parallel.device={device}",
        f"parallel.param_dtype={dtype}", "synthetic.scenes_per_batch=2", "synthetic.max_shots=3",
        "synthetic.max_grid=[4,8,8]", "synthetic.max_text_len=32", *extra])
    trainer = Trainer(cfg, init_distributed(cfg.parallel))
    records = trainer.train()[warmup:]
    step_s = statistics.median(r["step_time_s"] for r in records)
    return {"model": model, "step_s": step_s,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
            "tflops": statistics.median(r["tflops_per_device"] for r in records),
            "tokens_per_step": statistics.median(r["tokens_per_s"] * r["step_time_s"]
                                                 for r in records)}


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
    sys.exit(main())
