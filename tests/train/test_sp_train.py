"""Ulysses sequence parallelism in training (torchrun, gloo, CPU, fp32).

* `sp_worker.py`: the SP training step (FSDP over dp_shard x sp, activation checkpointing) gives
  the loss and every parameter gradient of the bare model on one process, for both masks, on a
  global batch with several packed scenes, global groups, 1-frame shots and an odd token count:
  sp=2 on 2 ranks, and dp=2 x sp=2 on 4 ranks.
* the trainer with ``parallel.sp_degree=2`` and ``data_source=synthetic``: per-step losses of
  the 1-rank run (`one_rank`, conftest.py); checkpoints resume across SP degrees exactly
  (sp=2 -> 1 rank; dp=2 on 2 ranks -> dp=2 x sp=2 on 4 ranks, which then gives dp=2's losses);
  the same losses with the blocks compiled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lct_train.config.store import compose_config, one_line_error
from lct_train.config.validate import ConfigError
from lct_train.parallel.mesh import mesh_shape
from tests.train.torchrun import (
    DIST_COMMON,
    DIST_STEPS,
    LAUNCH_TIMEOUT_S,
    SYNTHETIC,
    assert_resumed_like,
    assert_same_losses,
    env,
    losses,
    run,
)

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("sp_worker.py")
SP2 = "parallel.sp_degree=2"
GRAD_TOL = 1e-4  # |sp - reference| / (max |reference| + 1e-4) per parameter; measured ~1e-5


@pytest.fixture(scope="module")
def sp_two_ranks(tmp_path_factory):
    """sp=2 on 2 ranks (dp=1) x 2 micro-batches per step: the global batch of `one_rank`."""
    run_dir = tmp_path_factory.mktemp("sp_two_ranks")
    run(2, [*DIST_COMMON, f"run_dir={run_dir}", "optim.grad_accum=2", SP2])
    return run_dir


@pytest.mark.parametrize("nproc", [2, 4])
def test_sp_step_equals_one_process(tmp_path, nproc):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(WORKER), str(out), "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env(), cwd=WORKER.parents[2])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert any(n % 2 for n in result["tokens"])  # a joint length sp does not divide
    for mask in ("bidirectional", "causal"):
        r = result[mask]
        assert r["loss"] == pytest.approx(r["want_loss"], rel=1e-6), r
        assert r["worst_grad_diff"] < GRAD_TOL, r
        assert r["zero_grads"] == [], r  # every parameter's gradient is checked for real
        assert r["grad_norm"] > 1.0


def test_sp_training_equals_one_rank(sp_two_ranks, one_rank):
    want = losses(one_rank)
    assert sorted(want) == list(range(1, DIST_STEPS + 1))
    assert_same_losses(losses(sp_two_ranks), want, range(1, DIST_STEPS + 1))


def test_compiled_sp_training_equals_one_rank(one_rank, tmp_path):
    """Per-block torch.compile (aot_eager: the graph capture and autograd of inductor without
    its code generation) around the SP blocks, whose attention runs the all-to-alls; 2 steps
    (the second recompiles for new shapes), the first 2 losses of the uncompiled 1-rank run."""
    proc = run(2, [*SYNTHETIC, "steps=2", f"run_dir={tmp_path}", "optim.grad_accum=2", SP2,
                   "parallel.compile=true", "parallel.compile_backend=aot_eager",
                   "checkpoint.enabled=false"], TORCH_LOGS="dynamo")
    traced = proc.stdout + proc.stderr
    assert "torchdynamo start tracing forward" in traced  # the blocks did go through dynamo
    assert_same_losses(losses(tmp_path), losses(one_rank), [1, 2])


def test_resume_sp2_checkpoint_on_one_rank(sp_two_ranks, one_rank, tmp_path):
    """Saved at sp=2, resumed on 1 rank: the losses and final weights of the unbroken run."""
    run(1, [*DIST_COMMON, f"run_dir={tmp_path}", "optim.grad_accum=2",
            f"resume={sp_two_ranks / 'checkpoints' / 'step-00000002'}"])
    assert_resumed_like(tmp_path, one_rank, tmp_path)


def test_dp2_sp2_resumed_from_dp2_equals_dp2(two_ranks, tmp_path):
    """dp=2 x sp=2 on 4 ranks resumes the sp=1 dp=2 run's checkpoint (the reverse direction)
    and trains its steps: the losses of dp=2 on 2 ranks (the step itself: `sp_worker` x4)."""
    run(4, [*DIST_COMMON, f"run_dir={tmp_path}", SP2, "checkpoint.enabled=false",
            f"resume={two_ranks / 'checkpoints' / 'step-00000002'}"])
    got = losses(tmp_path)
    assert sorted(got) == [3, 4]
    assert_same_losses(got, losses(two_ranks), [3, 4])


def test_sp_degree_validation():
    with pytest.raises(ConfigError, match=r"parallel\.sp_degree: 3 does not divide model\.num_heads"):
        compose_config(["model=tiny", "parallel.sp_degree=3", "run_dir=x"])
    with pytest.raises(ConfigError) as err:
        compose_config(["model=tiny", "parallel.sp_degree=0", "run_dir=x"])
    assert one_line_error(err.value) == "parallel.sp_degree: must be > 0, got 0"
    assert mesh_shape(8, 1, -1, 2) == (1, 4, 2)
    assert mesh_shape(8, 2, -1, 2) == (2, 2, 2)
    for args, key in (((6, 1, -1, 4), "parallel.sp_degree"), ((8, 3, -1, 2), "parallel.dp_replicate"),
                      ((8, 1, 2, 2), "parallel.dp_shard")):
        with pytest.raises(ConfigError, match=key):
            mesh_shape(*args)
