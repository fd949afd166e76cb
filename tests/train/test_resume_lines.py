"""Issue 11 items 1-3 and 5: a resumed branch is the run's current line, the config's optimizer
settings win on resume, a refused start writes nothing, damaged checkpoints are named and
passed over, an interrupted save is completed instead of deleted."""

from __future__ import annotations

import json
import shutil

import yaml

from lct_train.core.checkpoint_layout import META_FILE, TMP_MARK, step_name
from lct_train.train.checkpoint_lineage import SET_ASIDE_DIR
from tests.testutils import one_line
from tests.train.torchrun import assert_same_losses, losses


def ckpt(run_dir, step):
    return run_dir / "checkpoints" / step_name(step)


def saved_steps(run_dir):
    return sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step-????????"))


def set_aside(run_dir):
    """Names of the set-aside checkpoints (any start), sorted."""
    return sorted(p.name for p in (run_dir / "checkpoints" / SET_ASIDE_DIR).glob("*/step-*"))


def logged_steps(run_dir):
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_explicit_resume_starts_a_line_that_auto_follows(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=6", "checkpoint.every=2")[0] == 0
    status, err = train(f"run_dir={run}", "steps=4", "checkpoint.every=2",
                        f"resume={ckpt(run, 2)}")
    assert status == 0
    lines = [ln for ln in err.splitlines() if "set aside" in ln]
    assert len(lines) == 1, err
    assert "step-00000004, step-00000006" in lines[0]
    assert set_aside(run) == ["step-00000004", "step-00000006"]  # kept, not deleted
    assert saved_steps(run) == [2, 4]
    before = len(logged_steps(run))
    assert train(f"run_dir={run}", "steps=6", "checkpoint.every=2")[0] == 0  # resume=auto
    assert logged_steps(run)[before:] == [5, 6]  # continued the new line's step 4


def test_the_purge_never_removes_the_checkpoint_just_written(train, tmp_path):
    run = tmp_path / "run"
    keep = ["checkpoint.keep_last=2", "checkpoint.keep_every=4"]
    assert train(f"run_dir={run}", "steps=8", "checkpoint.every=2", *keep)[0] == 0
    assert saved_steps(run) == [4, 6, 8]
    status, err = train(f"run_dir={run}", "steps=5", "checkpoint.every=1", *keep,
                        f"resume={ckpt(run, 4)}")
    assert status == 0
    assert f"saved {ckpt(run, 5)}" in err
    assert saved_steps(run) == [4, 5]
    assert set_aside(run) == ["step-00000006", "step-00000008"]


def test_config_optimizer_settings_win_on_resume_and_every_start_config_is_kept(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=2", "checkpoint.every=2")[0] == 0  # optim.lr=1e-3
    status, err = train(f"run_dir={run}", "steps=3", "optim.lr=5e-4", "optim.weight_decay=0.01")
    assert status == 0
    lines = [ln for ln in err.splitlines() if "optimizer settings" in ln]
    assert len(lines) == 1, err
    assert "optim.lr 0.001 -> 0.0005" in lines[0]
    assert "optim.weight_decay 0.0 -> 0.01" in lines[0]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["lr"]) for r in records] == [(1, 1e-3), (2, 1e-3), (3, 5e-4)]
    starts = sorted((run / "configs").glob("start-*.yaml"))
    assert [yaml.safe_load(p.read_text())["optim"]["lr"] for p in starts] == [1e-3, 5e-4]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 5e-4


def test_a_refused_start_changes_nothing_on_disk(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=2", "checkpoint.every=2")[0] == 0
    (run / "checkpoints" / f"{step_name(4)}{TMP_MARK}partial").mkdir()  # a killed save
    before = snapshot(run)
    status, err = train(f"run_dir={run}", "steps=4", "model=small")
    assert status == 2
    one_line(err)
    assert "config error: model: does not match the model of" in err
    assert snapshot(run) == before


def test_a_damaged_checkpoint_is_named_and_auto_falls_back(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=4", "checkpoint.every=2")[0] == 0
    want = losses(run)
    shard = ckpt(run, 4) / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    status, err = train(f"run_dir={run}", "steps=4", f"resume={ckpt(run, 4)}")
    assert status == 2
    one_line(err)
    assert f"resume: checkpoint {ckpt(run, 4)} is damaged: file __0_0.distcp has 1000" in err
    # a checkpoint written before checksums (no "files" in its meta): DCP's failure, one line
    meta_path = ckpt(run, 4) / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "files"}))
    status, err = train(f"run_dir={run}", "steps=4", f"resume={ckpt(run, 4)}")
    assert status == 2
    assert one_line(err).startswith(f"lct-train: config error: resume: cannot load {ckpt(run, 4)}: "
                                    "rank 0: ")
    meta_path.write_text(json.dumps(meta))
    status, err = train(f"run_dir={run}", "steps=4")  # resume=auto
    assert status == 0
    assert f"WARNING: checkpoint {ckpt(run, 4)} is damaged" in err
    assert f"resumed from {ckpt(run, 2)} at step 2" in err
    assert set_aside(run) == ["step-00000004"]  # the damaged one, kept for inspection
    got = losses(run)
    assert_same_losses(got, want, [3, 4])


def test_a_checkpoint_without_its_meta_is_named_and_set_aside(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=4", "checkpoint.every=2")[0] == 0
    want = losses(run)
    (ckpt(run, 4) / META_FILE).unlink()
    status, err = train(f"run_dir={run}", "steps=4")  # resume=auto
    assert status == 0
    assert (f"WARNING: checkpoint {ckpt(run, 4)} is damaged (its {META_FILE} is missing): "
            "falling back to an older one") in err
    assert f"resumed from {ckpt(run, 2)} at step 2" in err
    assert set_aside(run) == ["step-00000004"]
    assert (ckpt(run, 4) / META_FILE).is_file()  # the new step 4
    assert_same_losses(losses(run), want, [3, 4])


def test_an_interrupted_save_is_completed_not_deleted(train, tmp_path):
    run = tmp_path / "run"
    assert train(f"run_dir={run}", "steps=2", "checkpoint.every=2")[0] == 0
    root = run / "checkpoints"
    # killed between setting the old copy aside and renaming the new one (old code: both under
    # temporary names), plus a partial write that never got its meta file
    shutil.copytree(ckpt(run, 2), root / f"{step_name(2)}{TMP_MARK}old")
    ckpt(run, 2).rename(root / f"{step_name(2)}{TMP_MARK}a1b2c3")
    (root / f"{step_name(4)}{TMP_MARK}d4e5f6").mkdir()
    status, err = train(f"run_dir={run}", "steps=3")
    assert status == 0
    assert f"resumed from {ckpt(run, 2)} at step 2" in err
    assert (ckpt(run, 2) / META_FILE).is_file()
    assert saved_steps(run) == [2, 3]
    assert not list(root.glob(f"*{TMP_MARK}*"))
    assert len(set_aside(run)) == 1  # the second complete copy: kept
    assert logged_steps(run) == [1, 2, 3]
