"""In-training validation (eval.every): the same validation loss on 1 rank, 2 gloo ranks of data
parallelism (fixed timesteps and noise; 3 held-out scenes, so rank 1 pads) and 2 ranks of
sequence parallelism, a sample contact sheet and scores."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from tests.testutils import build_synthetic_shards
from tests.train.torchrun import env, run, torchrun_cmd

SYNTH = dict(num_scenes=3, min_shots=2, max_shots=3, min_frames=2, max_frames=2, height=16,
             width=16, fps=8.0, p_continuous=0.0, max_characters=2, seed=7)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return build_synthetic_shards(tmp_path_factory, SYNTH, area=16 * 16, name="heldout")


def _validation_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val/loss" in r]


@pytest.mark.slow
def test_validation_loss_is_rank_independent_and_sample_is_logged(heldout, tmp_path):
    data, truth = heldout
    common = ["data_source=synthetic", "synthetic.scenes_per_batch=2", "model.latent_channels=12",
              "steps=2", "eval.every=2", f"eval.data={data}", f"eval.truth={truth}",
              "eval.sample_scenes=1", "eval.sample_steps=2", "checkpoint.enabled=false"]
    got = {}
    for nproc, sp in ((1, 1), (2, 1), (2, 2)):
        run_dir = tmp_path / f"ranks{nproc}-sp{sp}"
        run(nproc, [*common, f"run_dir={run_dir}", f"parallel.sp_degree={sp}"])
        records = _validation_records(run_dir)
        assert [r["step"] for r in records] == [2]
        rec = records[0]
        assert math.isfinite(rec["val/loss"])
        assert rec["val/loss"] > 0
        assert 0.0 <= rec["val/hidden_agreement"] <= 1.0
        assert 0.0 <= rec["val/palette_similarity"] <= 1.0
        assert (run_dir / "eval" / "step-00000002.png").is_file()
        got[nproc, sp] = rec
    for ranks in ((2, 1), (2, 2)):  # data parallel; sequence parallel (each rank half a scene)
        assert got[ranks]["val/loss"] == pytest.approx(got[1, 1]["val/loss"], rel=1e-4)
    for key in ("val/hidden_agreement", "val/palette_similarity"):  # the same sample
        assert got[2, 2][key] == pytest.approx(got[1, 1][key], abs=1e-4)


def test_eval_without_data_is_a_config_error(tmp_path):
    proc = subprocess.run(torchrun_cmd(1, ["data_source=synthetic", "steps=1", "eval.every=1",
                                           f"run_dir={tmp_path / 'r'}"]),
                          capture_output=True, text=True, timeout=240, env=env())
    assert proc.returncode != 0
    assert "eval.data: is empty" in proc.stderr


@pytest.mark.slow
def test_validation_of_a_guidance_embedded_model(heldout, tmp_path):
    """A guidance-distilled model (guidance_embeds, as hunyuan-video) validates: its sample gets
    the embedded guidance of its preset (here none: the value it trains with, loss.guidance)."""
    data, _ = heldout
    run_dir = tmp_path / "run"
    run(1, ["model=tiny", "model.latent_channels=12", "model.guidance_embeds=true",
            "data_source=synthetic", "synthetic.scenes_per_batch=1", "steps=1", "eval.every=1",
            f"eval.data={data}", "eval.scenes=1", "eval.sample_steps=2",
            "checkpoint.enabled=false", f"run_dir={run_dir}"])
    records = _validation_records(run_dir)
    assert [r["step"] for r in records] == [1]
    assert math.isfinite(records[0]["val/loss"])
    assert (run_dir / "eval" / "step-00000001.png").is_file()


def test_sample_settings_come_from_eval_then_the_preset_then_the_fallbacks():
    from types import SimpleNamespace

    from lct_train.config.schema import EvalConfig
    from lct_train.model.sampling_defaults import SamplingDefaults
    from lct_train.sample.sampler import SamplingSettings
    from lct_train.train.validation import Validator

    hunyuan = SamplingDefaults(steps=50, guidance=1.0, embedded_guidance=6.0, shift=7.0)

    def settings(preset, trained_guidance=1.0, **eval_cfg):
        owner = SimpleNamespace(cfg=EvalConfig(**eval_cfg), inp=SimpleNamespace(
            guidance=trained_guidance), model_cfg=SimpleNamespace(sampling=preset))
        return Validator.sampling_settings(owner)

    assert settings(hunyuan) == SamplingSettings(steps=16, guidance=1.0, embedded_guidance=6.0,
                                                 shift=7.0)
    assert settings(hunyuan, guidance=2.0, shift=5.0).guidance == 2.0
    # no preset: today's eval defaults; embedded guidance as trained (None: no embedding)
    assert settings(SamplingDefaults(), trained_guidance=None) == SamplingSettings(
        steps=16, guidance=3.0, shift=3.0)
    assert settings(SamplingDefaults(), trained_guidance=1.0).embedded_guidance == 1.0
