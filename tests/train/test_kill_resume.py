"""SIGKILL a running torchrun job mid-training, resume it (resume=auto), and get the same
per-step losses as a run that never stopped (SPEC §8.7), through the real scene loader."""

from __future__ import annotations

import json
import time

import pytest

from lct_train.core.checkpoint_layout import is_valid, step_name
from tests.testutils import build_synthetic_shards
from tests.train.torchrun import kill_job, losses, run, start

pytestmark = pytest.mark.slow
STEPS = 6
KILL_AFTER_STEP = 2
WAIT_S = 240
POLL_S = 0.05
SCENES = 8  # one shard each: >= 2 ranks x 1 worker
SYNTH = dict(num_scenes=SCENES, min_shots=1, max_shots=3, min_frames=2, max_frames=3, height=32,
             width=32, fps=8.0, p_continuous=0.3, max_characters=2, seed=5)
# pixel:2 VAE on RGB -> 12 latent channels; the "tiny" text encoder -> 32 / 16 dims.
DATA_GEOMETRY = ["model.latent_channels=12"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(tmp_path_factory)


def build_dataset(tmp_path_factory):
    """8 one-scene shards of the synthetic set (pixel:2 VAE, tiny text encoder)."""
    return build_synthetic_shards(tmp_path_factory, SYNTH, area=32 * 32)[0]


def overrides(dataset, run_dir) -> list[str]:
    return [*DATA_GEOMETRY, f"data.sources=[{{path: {dataset}}}]", "data.num_workers=0",
            "data.max_tokens=512", "data.p_image=0.2", f"steps={STEPS}", "checkpoint.every=2",
            f"run_dir={run_dir}"]


def test_sigkill_and_resume_gives_the_same_losses(dataset, tmp_path):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    run(2, overrides(dataset, ref_dir))
    want = losses(ref_dir)
    assert sorted(want) == list(range(1, STEPS + 1))

    job = start(2, [*overrides(dataset, run_dir), "debug.step_delay_s=1.0"],
                tmp_path / "killed.log")
    target = run_dir / "checkpoints" / step_name(KILL_AFTER_STEP)
    deadline = time.monotonic() + WAIT_S
    while not is_valid(target):
        assert job.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(POLL_S)
    kill_job(job)
    assert not is_valid(run_dir / "checkpoints" / step_name(STEPS)), "the job was not killed"

    saved = [s for s in range(1, STEPS + 1) if is_valid(run_dir / "checkpoints" / step_name(s))]
    metrics = run_dir / "metrics.jsonl"
    logged_before = len(metrics.read_text().splitlines())
    run(2, [*overrides(dataset, run_dir), "resume=auto"])
    appended = [json.loads(x)["step"] for x in metrics.read_text().splitlines()[logged_before:]]
    assert appended == list(range(max(saved) + 1, STEPS + 1))  # resumed after the newest checkpoint
    got = losses(run_dir)
    for step in range(1, STEPS + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), (step, got, want)
