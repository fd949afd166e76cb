"""``lct-estimate`` against reality on CPU: the estimate (fake tensors, fake process group)
next to the same run on real tensors in a real 2-rank gloo job, both tracked by
``FSDPMemTracker`` (the only memory accounting a CPU has per tensor category).

Both sides use the dense ``reference`` attention (a CPU cannot run flash); everything else -
model, parallelize, step, AdamW - is the estimator's code path.

  python bench/estimate_check.py model=tiny estimate.tokens=1200 estimate.shots=3
Prints per category: estimated, real, ratio; the last line is JSON with ``rel_error``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lct_train.estimate import config, run
from lct_train.estimate.report import CATEGORIES

WORLD = 2
FIXED = ["estimate.attention=reference", "estimate.gpu_gb=1", f"estimate.world_size={WORLD}",
         "estimate.frame=[4,4]", "estimate.text_len=16"]


def measure(args: list[str], fake: bool) -> dict:
    from lct_train.config.store import compose_config

    ours, training = config.split_args(args)
    m = run.measure(compose_config(training), config.parse(ours), fake=fake)
    return {**m.categories, "peak": m.peak_bytes}


def real_job(args: list[str]) -> dict:
    """torchrun of this file's ``--real`` mode; rank 0's figures."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={WORLD}", __file__, "--real", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(args: list[str]) -> dict:
    args = [*FIXED, *args]
    run.fake_process_group(WORLD)
    try:
        est = measure(args, fake=True)
    finally:
        run.shutdown()
    real = real_job(args)
    rows = {}
    for name, keys in CATEGORIES.items():
        rows[name] = (sum(est.get(k, 0) for k in keys), sum(real.get(k, 0) for k in keys))
    rows["peak"] = (est["peak"], real["peak"])
    return {"args": args, "rows": rows,
            "rel_error": abs(est["peak"] - real["peak"]) / real["peak"]}


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "--real":
        import torch.distributed as dist

        from lct_train.parallel.dist import end_process, shutdown

        dist.init_process_group("gloo")
        done = False
        try:
            out = measure(args[1:], fake=False)
            done = True
        finally:
            shutdown(synchronize=done)
        if int(os.environ["RANK"]) == 0:
            print(json.dumps(out))
        end_process(0)
    result = compare(args)
    print(f"{'category':<17} {'estimate MB':>12} {'real MB':>12}")
    for name, (e, r) in result["rows"].items():
        print(f"{name:<17} {e / 1e6:12.3f} {r / 1e6:12.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
