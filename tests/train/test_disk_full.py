"""A full disk during a save (issue 22): one line naming the checkpoint and the path, exit 2; the
earlier checkpoints stay intact, nothing half-written is resumed from, and the run resumed on a
larger disk gives the losses of a run that never stopped. The disk is a real tmpfs just larger
than the run's first checkpoint (mounting one needs root, as on CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from lct_train.core.checkpoint_layout import TMP_MARK, step_name
from lct_train.train.checkpoint_integrity import verify
from tests.train.torchrun import assert_same_losses, losses

HEADROOM = 96 << 10  # room for the config and metrics files, far less than a checkpoint


def _disk_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def small_disk(where, size: int):
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.slow
def test_disk_full_during_a_save(train, tmp_path):
    whole = tmp_path / "whole"
    assert train(f"run_dir={whole}", "steps=4", "checkpoint.every=2")[0] == 0
    first = tmp_path / "first"  # the run as it was after its step-2 save
    shutil.copytree(whole, first)
    shutil.rmtree(first / "checkpoints" / step_name(4))
    size = (_disk_bytes(first) + HEADROOM + 4095) // 4096 * 4096
    with small_disk(tmp_path / "disk", size) as disk:
        run = disk / "run"
        shutil.copytree(first, run)
        for _ in range(2):  # the save fails; so does a resume on the still-full disk
            status, err = train(f"run_dir={run}", "steps=4", "checkpoint.every=2")
            assert status == 2
            assert "Traceback" not in err
            last = err.strip().splitlines()[-1]
            assert last.startswith("lct-train: rank 0: checkpoint error: cannot save checkpoint "
                                   f"step 4 to {run / 'checkpoints' / step_name(4)}{TMP_MARK}"), err
            assert "No space left on device" in last
            saved = run / "checkpoints" / step_name(2)
            assert verify(saved) is None  # the earlier checkpoint is intact
            assert not (run / "checkpoints" / step_name(4)).exists()
        larger = tmp_path / "larger"
        shutil.copytree(run, larger)
    assert not os.path.ismount(tmp_path / "disk")
    status, err = train(f"run_dir={larger}", "steps=4", "checkpoint.every=2")
    assert status == 0, err
    assert f"resumed from {larger / 'checkpoints' / step_name(2)} at step 2" in err
    assert_same_losses(losses(larger), losses(whole), [3, 4])
