"""A Wan-family model through the same trainer as the MMDiT (torchrun, gloo, CPU, fp32): FSDP on
2 ranks gives the 1-rank losses and survives a SIGKILL exactly; causal FT from the stage-1
checkpoint on the scene loader under Ulysses SP=2 gives the 1-rank training and validation
losses; ``stage.init_from`` an export imported from a diffusers ``WanTransformer3DModel`` starts
from exactly its weights and exports back to them."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from lct_train.core.checkpoint_layout import is_valid, step_name
from lct_train.core.safetensors_io import SafetensorsReader
from tests.train.inprocess import train_in_process
from tests.train.torchrun import (
    DIST_COMMON,
    DIST_STEPS,
    assert_same_final_weights,
    assert_same_losses,
    kill_job,
    losses,
    model_weights,
    run,
    start,
)

pytestmark = pytest.mark.slow
# tiny-wan at the geometry of the test shards (pixel:2 VAE on RGB, the tiny text encoder)
WAN = ["model=tiny-wan", "model.latent_channels=12", "model.text_dim=32"]
STAGE1 = f"step-{DIST_STEPS:08d}"


@pytest.fixture(scope="module")
def wan_one_rank(tmp_path_factory):
    """Stage 1 (bidirectional) of tiny-wan: 1 rank (in process) x 2 micro-batches per step."""
    run_dir = tmp_path_factory.mktemp("wan_one_rank")
    assert train_in_process(*WAN, *DIST_COMMON, f"run_dir={run_dir}", "optim.grad_accum=2") == 0
    return run_dir


def test_wan_fsdp_two_ranks_equal_one_rank_through_a_sigkill(wan_one_rank, train, tmp_path):
    """FSDP on 2 ranks x 1 micro-batch (the same global batch) is SIGKILLed after its step-2
    checkpoint; 1 rank x 2 resumes it (resume=auto): every step's loss, the final weights and
    EMA of the unbroken 1-rank run."""
    args = [*WAN, *DIST_COMMON, f"run_dir={tmp_path}"]
    job = start(2, [*args, "debug.step_delay_s=0.5"], tmp_path / "killed.log")
    deadline = time.monotonic() + 240
    while not is_valid(tmp_path / "checkpoints" / step_name(2)):
        assert job.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    kill_job(job)
    assert not is_valid(tmp_path / "checkpoints" / step_name(DIST_STEPS)), "not killed"
    status, err = train(*args, "optim.grad_accum=2", "resume=auto")
    assert status == 0, err
    assert "resumed from" in err + (tmp_path / "config.yaml").read_text()
    assert_same_losses(losses(tmp_path), losses(wan_one_rank), range(1, DIST_STEPS + 1))
    assert_same_final_weights(tmp_path, wan_one_rank, tmp_path)


def test_wan_causal_ft_on_shards_sp2_equals_one_rank(wan_one_rank, train, tmp_path_factory,
                                                    tmp_path):
    """Stage 2 (context-causal) from the newest stage-1 checkpoint, on the scene loader (3
    scenes: pixel:2 VAE, tiny text encoder, prompts cut to the 24-token window) with the
    validation loss on the same scenes: Ulysses SP=2 on 2 ranks (video sharded, text whole)
    gives the 1-rank training and validation losses and the same validation sample."""
    from tests.testutils import build_synthetic_shards
    from tests.train.test_validation import SYNTH, _validation_records

    data, truth = build_synthetic_shards(tmp_path_factory, SYNTH, area=16 * 16, name="wan_shards")
    common = [*WAN, "stage=causal_ft", f"stage.init_run={wan_one_rank}", "data_source=shards",
              f"data.sources=[{{path: {data}}}]", "data.num_workers=0", "data.max_tokens=512",
              "steps=2", "eval.every=2", f"eval.data={data}", f"eval.truth={truth}",
              "eval.sample_scenes=1", "eval.sample_steps=2", "checkpoint.enabled=false"]
    want, got = tmp_path / "one", tmp_path / "sp2"
    status, err = train(*common, f"run_dir={want}")
    assert status == 0, err
    proc = run(2, [*common, f"run_dir={got}", "parallel.sp_degree=2"])
    assert f"{wan_one_rank / 'checkpoints' / STAGE1} (model weights)" in proc.stdout + proc.stderr
    assert sorted(losses(want)) == [1, 2]
    assert_same_losses(losses(got), losses(want), [1, 2])
    (one,), (sp2,) = (_validation_records(d) for d in (want, got))
    assert math.isfinite(one["val/loss"])
    assert sp2["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)
    for key in ("val/hidden_agreement", "val/palette_similarity"):  # the validation sample
        assert 0.0 <= one[key] <= 1.0
        assert sp2[key] == pytest.approx(one[key], abs=1e-4)
    assert (got / "eval" / "step-00000002.png").is_file()


def test_wan_init_from_an_imported_diffusers_export(train, tmp_path):
    """lct-convert import-diffusers of a tiny diffusers WanTransformer3DModel, then a run with
    ``model_from=`` and ``stage.init_from=`` that export: at lr 0 its checkpoint holds exactly
    the imported weights, and exports back (export, export-diffusers) to the source's."""
    from lct_train.convert.cli import main as convert
    from lct_train.model.wan.config import WanConfig
    from tests.model.wan.wan_testutils import diffusers_wan

    source = diffusers_wan(WanConfig.from_yaml("conf/model/tiny-wan.yaml"), seed=3)
    source.save_pretrained(tmp_path / "pipe" / "transformer", safe_serialization=True)
    export = tmp_path / "export"
    assert convert(["import-diffusers", str(tmp_path / "pipe"), str(export)]) == 0
    run_dir = tmp_path / "run"
    status, err = train(f"model_from={export}", f"stage.init_from={export}", "steps=1",
                        "optim.lr=0", "optim.ema_decay=0", f"run_dir={run_dir}")
    assert status == 0, err
    started = model_weights(run_dir / "checkpoints" / step_name(1), tmp_path)
    with SafetensorsReader(export) as reader:
        imported = reader.load_all()
    assert started.keys() == imported.keys()
    for key, value in imported.items():
        torch.testing.assert_close(started[key], value, rtol=0, atol=0, msg=key)
    # and back: the run's checkpoint -> an export (dcp_export) -> diffusers: the source weights
    ckpt, back = run_dir / "checkpoints" / step_name(1), tmp_path / "back"
    assert convert(["export", str(ckpt), str(tmp_path / "again"), "--weights", "model"]) == 0
    assert convert(["export-diffusers", str(tmp_path / "again"), str(back)]) == 0
    with SafetensorsReader(next(back.rglob("*.safetensors"))) as reader:
        returned = reader.load_all()
    assert returned.keys() == source.state_dict().keys()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(returned[key], value, rtol=0, atol=0, msg=key)


def test_a_checkpoint_of_the_other_family_is_refused(tmp_path):
    """check_same_architecture (resume, stage.init_from a checkpoint) names both families."""
    from lct_train.config.store import compose_config
    from lct_train.core.checkpoint_layout import META_FILE
    from lct_train.core.errors import ConfigError
    from lct_train.train.init_weights import check_same_architecture

    wan, mmdit = (compose_config([f"model={m}"]).model for m in ("tiny-wan", "tiny"))
    for ours, theirs in ((wan, mmdit), (mmdit, wan)):
        (tmp_path / META_FILE).write_text(json.dumps({"config": {"model": theirs.to_dict()}}))
        with pytest.raises(ConfigError, match=f"model: is a {ours.family} model, .* holds a "
                                              f"{theirs.family} model"):
            check_same_architecture(ours, tmp_path)
    check_same_architecture(wan, tmp_path)  # its own family's, same architecture: accepted
