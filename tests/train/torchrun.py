"""Helpers of the multi-process tests: launch the trainer under torchrun, read its losses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

REPO = Path(__file__).resolve().parents[2]  # worker scripts import tests.*
LAUNCH_TIMEOUT_S = 240
TOL = dict(rel=1e-5, abs=1e-6)  # fp32 losses of equivalent runs
# Small, fast, fp32 CPU runs; every test adds its own overrides.
BASE = ["model=tiny", "parallel=cpu", "logging.tensorboard=false", "logging.console=false",
        "optim.warmup_steps=0", "optim.lr=1e-3", "optim.ema_decay=0.9"]
SYNTHETIC = ["data_source=synthetic", "synthetic.scenes_per_batch=2"]
# The reference runs of the distributed tests (conftest.py: one_rank, two_ranks).
DIST_STEPS = 4
DIST_COMMON = [*SYNTHETIC, f"steps={DIST_STEPS}", "checkpoint.every=2"]


def with_base(overrides: list[str]) -> list[str]:
    """``BASE`` + ``overrides``; a ``model=`` preset among the overrides replaces BASE's."""
    own_model = any(o.startswith(("model=", "model_from=")) for o in overrides)
    return [*(o for o in BASE if not (own_model and o.startswith("model="))), *overrides]


def torchrun_cmd(nproc: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "lct_train.train.main", *with_base(overrides)]


def env() -> dict:
    # PYTHONFAULTHANDLER: a rank that dies of a signal prints every thread's Python stack
    out = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    out.pop("RANK", None)
    return out


def run(nproc: int, overrides: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(torchrun_cmd(nproc, overrides), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, env=env() | extra_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def start(nproc: int, overrides: list[str], log: Path) -> subprocess.Popen:
    """A torchrun job in the background (stop it with `kill_job`)."""
    return subprocess.Popen(torchrun_cmd(nproc, overrides), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def losses(run_dir: Path) -> dict[int, float]:
    """step -> loss; a resumed run appends, the last record of a step wins."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:  # not a validation record
            out[rec["step"]] = rec["loss"]
    return out


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc). torchrun starts its workers in sessions of
    their own, so killing the launcher's process group would leave them running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_job(job: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGKILL a torchrun job: the launcher and every worker, then wait until all are gone."""
    pids = [job.pid, *_descendants(job.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + timeout_s
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} survived SIGKILL"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not reaped yet


def assert_same_losses(got: dict, want: dict, steps) -> None:
    for step in steps:
        assert got[step] == pytest.approx(want[step], **TOL), (step, got, want)


def assert_resumed_like(got_dir: Path, want_dir: Path, tmp_path: Path) -> None:
    """A run resumed at step 2 into ``got_dir`` trained steps 3..DIST_STEPS with the losses of
    the unbroken ``want_dir`` and ends on its weights and EMA (the same keys, fp32 tolerance)."""
    got = losses(got_dir)
    assert sorted(got) == list(range(3, DIST_STEPS + 1))
    assert_same_losses(got, losses(want_dir), range(3, DIST_STEPS + 1))
    assert_same_final_weights(got_dir, want_dir, tmp_path)


def assert_same_final_weights(got_dir: Path, want_dir: Path, tmp_path: Path) -> None:
    """The step-DIST_STEPS checkpoints of two runs hold the same weights and EMA."""
    final = f"checkpoints/step-{DIST_STEPS:08d}"
    for key in ("model", "ema"):
        want = model_weights(want_dir / final, tmp_path / "want", key)
        have = model_weights(got_dir / final, tmp_path / "have", key)
        assert have.keys() == want.keys(), key
        for name, value in want.items():
            torch.testing.assert_close(have[name], value, rtol=1e-5, atol=1e-6, msg=name)


def model_weights(ckpt, tmp_path, key="model") -> dict[str, torch.Tensor]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{ckpt.parent.parent.name}-{ckpt.name}.pt"
    dcp_to_torch_save(ckpt, out)
    return torch.load(out, weights_only=False)[key]
