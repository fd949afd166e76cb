"""LR schedule, checkpoint retention and the choice of the newest valid checkpoint."""

import json
import math

import pytest

from lct_train.core.checkpoint_layout import (
    META_FILE,
    list_checkpoints,
    newest_checkpoint,
    resolve_checkpoint,
    step_name,
)
from lct_train.train.checkpoint import retained_steps
from lct_train.train.optim import lr_factor


def test_warmup_then_constant():
    f = [lr_factor(s, warmup_steps=4, total_steps=10, schedule="constant", min_lr_ratio=0.0)
         for s in range(6)]
    assert f == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_min_at_the_last_step():
    kw = dict(warmup_steps=2, total_steps=12, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(1, **kw) == 1.0
    assert lr_factor(2, **kw) == pytest.approx(1.0)
    assert lr_factor(11, **kw) == pytest.approx(0.1)
    mid = lr_factor(2 + 9 / 2, **kw)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_retention_keeps_last_k_and_every_m():
    steps = [100, 200, 300, 400, 500, 600]
    assert retained_steps(steps, keep_last=2, keep_every=300) == {300, 500, 600}
    assert retained_steps(steps, keep_last=1, keep_every=0) == {600}


def make(root, step, valid=True, name=None):
    path = root / (name or step_name(step))
    path.mkdir(parents=True)
    if valid:
        (path / META_FILE).write_text(json.dumps({"step": step}))
    return path


def test_newest_valid_checkpoint_skips_partial_and_tmp(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    make(root, 2)
    good = make(root, 4)
    make(root, 6, valid=False)  # killed before the meta file: not a checkpoint
    make(root, 8, name=f"{step_name(8)}.tmp-abc")  # killed during the save
    (root / f"{step_name(8)}.tmp-abc" / META_FILE).write_text("{}")
    assert [s for s, _ in list_checkpoints(root)] == [2, 4]
    assert newest_checkpoint(tmp_path / "run") == good
    assert resolve_checkpoint(str(tmp_path / "run"), "resume") == good
    assert resolve_checkpoint(str(good), "resume") == good
    with pytest.raises(FileNotFoundError, match=r"stage\.init_run"):
        resolve_checkpoint(str(tmp_path / "nowhere"), "stage.init_run")
