"""Helpers of the multi-process tests: launch the trainer under torchrun, read its losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LAUNCH_TIMEOUT_S = 240
# Small, fast, fp32 CPU runs; every test adds its own overrides.
BASE = ["model=tiny", "parallel=cpu", "logging.tensorboard=false", "logging.console=false",
        "optim.warmup_steps=0", "optim.lr=1e-3", "optim.ema_decay=0.9"]
SYNTHETIC = ["data_source=synthetic", "synthetic.scenes_per_batch=2"]


def torchrun_cmd(nproc: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "lct_train.train.main", *BASE, *overrides]


def env() -> dict:
    out = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out.pop("RANK", None)
    return out


def run(nproc: int, overrides: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(torchrun_cmd(nproc, overrides), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, env=env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def start(nproc: int, overrides: list[str], log: Path) -> subprocess.Popen:
    """A torchrun job in its own process group (so a test can SIGKILL all of it)."""
    return subprocess.Popen(torchrun_cmd(nproc, overrides), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss; a resumed run appends, the last record of a step wins."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out
