"""Real multi-process runs (torchrun, gloo, CPU): FSDP equivalence, resharded resume, stage
hand-off (SPEC §8.7). Each run trains a tiny model for a few steps on synthetic scenes."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from tests.train.torchrun import DIST_COMMON as COMMON
from tests.train.torchrun import DIST_STEPS as STEPS
from tests.train.torchrun import (
    SYNTHETIC,
    assert_resumed_like,
    assert_same_losses,
    env,
    losses,
    model_weights,
    run,
    torchrun_cmd,
)

pytestmark = pytest.mark.slow
# The runs `one_rank` (1 rank x 2 micro-batches per step) and `two_ranks` (2 ranks x 1, the same
# global batch) are session fixtures of conftest.py (shared with test_sp_train.py).


def test_fsdp_two_ranks_equal_one_rank(one_rank, two_ranks):
    want = losses(one_rank)
    assert sorted(want) == list(range(1, STEPS + 1))
    assert_same_losses(losses(two_ranks), want, range(1, STEPS + 1))


def test_resume_two_ranks_on_one(one_rank, two_ranks, tmp_path):
    ckpt = two_ranks / "checkpoints" / "step-00000002"
    run(1, [*COMMON, f"run_dir={tmp_path}", "optim.grad_accum=2", f"resume={ckpt}"])
    assert_resumed_like(tmp_path, one_rank, tmp_path)  # losses, weights and EMA


def test_resume_one_rank_on_two(one_rank, tmp_path):
    ckpt = one_rank / "checkpoints" / "step-00000002"
    run(2, [*COMMON, f"run_dir={tmp_path}", f"resume={ckpt}"])
    got = losses(tmp_path)
    assert sorted(got) == [3, 4]  # only the steps after the checkpoint
    assert_same_losses(got, losses(one_rank), [3, 4])


def test_causal_ft_starts_from_the_newest_stage1_checkpoint(one_rank, tmp_path):
    ckpts = one_rank / "checkpoints"
    (ckpts / "step-00000009.tmp-deadbeef").mkdir()  # a save killed half-way
    (ckpts / "step-00000010").mkdir()  # no lct_meta.json: not a checkpoint
    run_dir = tmp_path / "causal"
    run(1, [*SYNTHETIC, "stage=causal_ft", f"stage.init_run={one_rank}", f"run_dir={run_dir}",
            "steps=1", "optim.lr=0", "optim.ema_decay=0"])
    stage1 = model_weights(ckpts / f"step-{STEPS:08d}", tmp_path)
    causal_ckpt = run_dir / "checkpoints" / "step-00000001"
    causal = model_weights(causal_ckpt, tmp_path)
    assert stage1.keys() == causal.keys()
    for key in stage1:  # lr = 0: the weights are exactly the ones loaded
        torch.testing.assert_close(causal[key], stage1[key], rtol=0, atol=0)
    meta = json.loads((causal_ckpt / "lct_meta.json").read_text())
    assert meta["mask"] == "causal"
    assert meta["config"]["stage"]["name"] == "causal_ft"


def test_init_from_a_sharded_safetensors_export(one_rank, tmp_path):
    """``lct-convert export`` writes shards + index; the trainer starts from that directory
    (2 ranks: rank 0 reads, broadcasts), and refuses a model it does not fit, naming the key."""
    from lct_train.convert.cli import main as convert

    stage1 = one_rank / "checkpoints" / f"step-{STEPS:08d}"
    export = tmp_path / "export"
    assert convert(["export", str(stage1), str(export), "--weights", "model",
                    "--max-shard-size", "20KB"]) == 0
    assert (export / "model.safetensors.index.json").is_file()
    run_dir = tmp_path / "from_export"
    run(2, [*SYNTHETIC, f"stage.init_from={export}", f"run_dir={run_dir}", "steps=1",
            "optim.lr=0", "optim.ema_decay=0"])
    started = model_weights(run_dir / "checkpoints" / "step-00000001", tmp_path)
    want = model_weights(stage1, tmp_path)
    assert started.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(started[key], want[key], rtol=0, atol=0)
    proc = subprocess.run(torchrun_cmd(1, [*SYNTHETIC, f"stage.init_from={export}",
                                           f"run_dir={tmp_path / 'bad'}", "steps=1",
                                           "model.num_single_blocks=2"]),
                          capture_output=True, text=True, timeout=240, env=env())
    assert proc.returncode != 0  # the trainer exits 2 (config error), torchrun then 1
    assert "config error: stage.init_from: initial weights" in proc.stderr, proc.stderr[-3000:]
    assert "single_transformer_blocks.1." in proc.stderr


def test_nonfinite_loss_step_is_skipped(tmp_path):
    """loss.nonfinite=skip: the step is skipped (weights and EMA unchanged) and training goes
    on (``loss.nonfinite=stop``: `test_nonfinite_stop_names_the_scenes`)."""
    skip_dir = tmp_path / "skip"
    run(1, [*SYNTHETIC, f"run_dir={skip_dir}", "steps=3", "debug.nonfinite_at_step=2",
            "checkpoint.every=1"])
    records = [json.loads(x) for x in (skip_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_step"] for r in records] == [False, True, False]
    assert all(math.isfinite(r["loss"]) for r in (records[0], records[2]))
    ckpts = skip_dir / "checkpoints"
    for key in ("model", "ema"):
        before, skipped, after = (model_weights(ckpts / f"step-{s:08d}", tmp_path / key, key)
                                  for s in (1, 2, 3))
        for name, value in before.items():  # the skipped step changed nothing
            torch.testing.assert_close(skipped[name], value, rtol=0, atol=0)
        assert any(not torch.equal(after[n], v) for n, v in skipped.items())  # training goes on


def test_nonfinite_stop_names_the_scenes(tmp_path):
    proc = subprocess.run(torchrun_cmd(1, [*SYNTHETIC, f"run_dir={tmp_path}", "steps=2",
                                           "debug.nonfinite_at_step=1", "loss.nonfinite=stop"]),
                          capture_output=True, text=True, timeout=240, env=env())
    assert proc.returncode != 0
    assert "synthetic/1/0/0" in proc.stderr + proc.stdout
