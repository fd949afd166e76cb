"""``finetune=lora`` training (torchrun, gloo, CPU): step 0 is the base model, only the
adapters train, FSDP on 2 ranks (with activation checkpointing, bf16-held base) equals 1 rank,
checkpoints hold adapters only and resume exactly; a different base is refused."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from lct_train.model.init import init_weights
from lct_train.model.lora import is_adapter
from lct_train.model.mmdit import LCTModel
from tests.testutils import build_synthetic_shards, tiny_config
from tests.train.torchrun import (
    DIST_COMMON,
    DIST_STEPS,
    SYNTHETIC,
    assert_same_losses,
    kill_job,
    losses,
    model_weights,
    run,
    start,
)

pytestmark = pytest.mark.slow
LORA = ["finetune=lora", "finetune.rank=4", "finetune.alpha=8", "optim.ema_decay=0"]
BF16_BASE = ["finetune.base_dtype=bfloat16"]


def write_base(path: Path, seed: int, **model_cfg) -> dict[str, torch.Tensor]:
    """A tiny model with every weight random (adaLN-zero would give the adapters no gradient)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = LCTModel(tiny_config(**model_cfg))
    init_weights(model)
    for p in model.parameters():
        p.data.normal_(std=0.1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path)
    return state


@pytest.fixture(scope="session")
def lora_base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora_base") / "base.safetensors"
    write_base(path, seed=0)
    return path


@pytest.fixture(scope="session")
def lora_one(tmp_path_factory, lora_base):
    """1 rank x 2 micro-batches per step, base held in bf16."""
    run_dir = tmp_path_factory.mktemp("lora_one")
    run(1, [*DIST_COMMON, *LORA, *BF16_BASE, f"stage.init_from={lora_base}",
            f"run_dir={run_dir}", "optim.grad_accum=2"])
    return run_dir


@pytest.fixture(scope="session")
def lora_two(tmp_path_factory, lora_base):
    """2 ranks x 1 micro-batch per step (the same global batch), activation checkpointing."""
    run_dir = tmp_path_factory.mktemp("lora_two")
    run(2, [*DIST_COMMON, *LORA, *BF16_BASE, f"stage.init_from={lora_base}",
            f"run_dir={run_dir}", "parallel.activation_checkpoint=full"])
    return run_dir


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def checksum(state: dict[str, torch.Tensor], dtype: torch.dtype) -> list[float]:
    values = [v.to(dtype).double() for v in state.values()]
    return [sum(float(v.sum()) for v in values), sum(float(v.square().sum()) for v in values)]


def test_two_ranks_equal_one_rank_and_only_adapters_train(lora_one, lora_two, lora_base,
                                                          tmp_path):
    want = losses(lora_one)
    assert sorted(want) == list(range(1, DIST_STEPS + 1))
    assert_same_losses(losses(lora_two), want, range(1, DIST_STEPS + 1))
    from safetensors.torch import load_file

    base = checksum(load_file(lora_base), torch.bfloat16)
    for run_dir in (lora_one, lora_two):
        for step in (2, DIST_STEPS):
            meta = json.loads((ckpt(run_dir, step) / "lct_meta.json").read_text())
            # the base checksum, recomputed at each save: training left the base as loaded
            assert all(math.isclose(a, b, rel_tol=1e-9)
                       for a, b in zip(meta["lora"]["base_checksum"], base)), meta["lora"]
            assert meta["lora"]["base"] == str(lora_base)
    adapters = model_weights(ckpt(lora_two, DIST_STEPS), tmp_path)
    names = {k.removesuffix(".lora_A.weight") for k in adapters if k.endswith("lora_A.weight")}
    assert len(names) == 29
    assert all(is_adapter(k) for k in adapters)
    assert all(adapters[f"{n}.lora_B.weight"].abs().sum() > 0 for n in names)  # they trained
    full = torch.load(tmp_path / f"{lora_two.name}-step-{DIST_STEPS:08d}.pt", weights_only=False)
    moments = set(full["optimizer"]["state"])
    assert moments
    assert all(is_adapter(k) for k in moments)


def test_step_zero_is_the_base_model(train, lora_base, tmp_path):
    """The first loss (before any update) of a LoRA run equals the full run's on that base."""
    common = [f"stage.init_from={lora_base}", "steps=1", "optim.ema_decay=0",
              "checkpoint.enabled=false"]
    assert train(*common, f"run_dir={tmp_path / 'full'}")[0] == 0
    assert train(*common, *LORA, f"run_dir={tmp_path / 'lora'}")[0] == 0
    assert losses(tmp_path / "lora")[1] == losses(tmp_path / "full")[1]


def test_resume_is_exact(lora_one, lora_two, tmp_path):
    """2-rank checkpoint of step 2, resumed on 1 rank: steps 3..4 as the unbroken run."""
    run(1, [*DIST_COMMON, *LORA, *BF16_BASE, f"stage.init_from={lora_one_base(lora_one)}",
            f"run_dir={tmp_path}", "optim.grad_accum=2", f"resume={ckpt(lora_two, 2)}"])
    got = losses(tmp_path)
    assert sorted(got) == [3, 4]
    assert_same_losses(got, losses(lora_one), [3, 4])
    want = model_weights(ckpt(lora_one, DIST_STEPS), tmp_path / "want")
    have = model_weights(ckpt(tmp_path, DIST_STEPS), tmp_path / "have")
    assert have.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(have[name], value, rtol=1e-5, atol=1e-6, msg=name)


def lora_one_base(run_dir: Path) -> str:
    return json.loads((ckpt(run_dir, 2) / "lct_meta.json").read_text())["lora"]["base"]


def test_another_base_is_refused(train, lora_one, tmp_path):
    other = tmp_path / "other.safetensors"
    write_base(other, seed=1)
    run_dir = tmp_path / "run"
    status, err = train(*LORA, *BF16_BASE, f"stage.init_from={other}", f"run_dir={run_dir}",
                        f"resume={ckpt(lora_one, 2)}", "steps=3")
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("lct-train: config error: stage.init_from: the base weights"), err
    assert not run_dir.exists()  # a refused start writes nothing
    status, err = train(*BF16_BASE, f"stage.init_from={other}", f"run_dir={run_dir}",
                        f"resume={ckpt(lora_one, 2)}", "steps=3", "optim.ema_decay=0")
    assert status == 2
    assert "finetune.mode: " in err
    assert "is a LoRA checkpoint" in err


@pytest.mark.parametrize(("overrides", "key"), [
    (["finetune.targets=[to_q]"], "finetune.targets[0]: 'to_q' matches no nn.Linear"),
    (["optim.ema_decay=0.9"], "optim.ema_decay: the EMA of the weights is full fine-tuning"),
    (["finetune.dropout=0.1", "parallel.activation_checkpoint=full"], "finetune.dropout: "),
    (["finetune.targets=['(']"], "finetune.targets[0]: '(' is not a regular expression"),
])
def test_bad_lora_settings_are_one_line(train, tmp_path, overrides, key):
    status, err = train(*LORA, *overrides, f"run_dir={tmp_path}", "steps=1")
    assert status == 2
    assert err.strip().splitlines()[-1].startswith(f"lct-train: config error: {key}"), err


def test_sp_lora_equals_one_rank(lora_one, lora_base, tmp_path):
    """Ulysses sp=2 on 2 ranks with activation checkpointing: the first 2 losses of the 1-rank
    run (the same global batch: 2 micro-batches per step). Compile: tests/model/test_lora.py."""
    run(2, [*SYNTHETIC, *LORA, *BF16_BASE, f"stage.init_from={lora_base}", "steps=2",
            f"run_dir={tmp_path}", "optim.grad_accum=2", "parallel.sp_degree=2",
            "parallel.activation_checkpoint=full", "checkpoint.enabled=false"])
    assert_same_losses(losses(tmp_path), losses(lora_one), [1, 2])


def test_causal_validation_of_fresh_adapters_is_the_base_models(train, tmp_path,
                                                                 tmp_path_factory):
    """In-training validation (context-causal masks) of a LoRA run before any update: the
    validation loss of the full model on the same base (and close to it with the base held in
    bf16, which the sample's forward casts for)."""
    from tests.train.test_validation import SYNTH

    data, truth = build_synthetic_shards(tmp_path_factory, SYNTH, area=16 * 16, name="heldout")
    base = tmp_path / "base.safetensors"
    write_base(base, seed=0, latent_channels=12)  # the held-out shards' latents
    common = [f"stage.init_from={base}", "stage.mask=causal", "steps=1", "optim.lr=0",
              "optim.ema_decay=0", "checkpoint.enabled=false", "eval.every=1",
              f"eval.data={data}", f"eval.truth={truth}", "eval.sample_scenes=1",
              "eval.sample_steps=2", "model.latent_channels=12"]
    got = {}
    for name, extra in (("full", []), ("lora", LORA), ("lora-bf16", [*LORA, *BF16_BASE])):
        status, err = train(*common, *extra, f"run_dir={tmp_path / name}")
        assert status == 0, err
        records = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text()
                   .splitlines()]
        got[name] = next(r for r in records if "val/loss" in r)
    assert math.isfinite(got["full"]["val/loss"])
    assert got["lora"]["val/loss"] == pytest.approx(got["full"]["val/loss"], rel=1e-6)
    assert got["lora"]["val/palette_similarity"] == pytest.approx(
        got["full"]["val/palette_similarity"], abs=1e-6)
    # a base held in bf16 under fp32 compute: the sampler feeds the compute dtype
    assert got["lora-bf16"]["val/loss"] == pytest.approx(got["full"]["val/loss"], rel=2e-2)


def test_export_lora_and_merge(lora_one, lora_base, tmp_path, capsys):
    """``lct-convert export-lora``: diffusers' keys, B scaled by alpha / r with alpha = r in the
    header; ``--merge``: the base as the run held it (bf16) plus (alpha / r) B A; another base
    is refused and nothing is written."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from lct_train.convert.cli import main as convert
    from lct_train.convert.lora_export import LORA_FILE, METADATA_KEY

    step = ckpt(lora_one, DIST_STEPS)
    adapters = model_weights(step, tmp_path)
    assert convert(["export-lora", str(lora_one), str(tmp_path / "lora")]) == 0
    with safe_open(str(tmp_path / "lora" / LORA_FILE), framework="pt") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
        exported = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert exported.keys() == {f"transformer.{k}" for k in adapters}
    assert header["transformer.r"] == header["transformer.lora_alpha"] == 4
    for name, value in adapters.items():
        scale = 8 / 4 if name.endswith("lora_B.weight") else 1.0
        torch.testing.assert_close(exported[f"transformer.{name}"], value * scale,
                                   rtol=0, atol=0)

    assert convert(["export-lora", str(step), str(tmp_path / "merged"), "--merge"]) == 0
    merged, base = load_file(tmp_path / "merged" / "model.safetensors"), load_file(lora_base)
    assert merged.keys() == base.keys()
    modules = {k.removesuffix(".lora_A.weight") for k in adapters if k.endswith(".lora_A.weight")}
    for key, value in base.items():
        want = value.to(torch.bfloat16).float()
        module = key.removesuffix(".weight")
        if module in modules:
            want = want + 2.0 * adapters[f"{module}.lora_B.weight"] @ adapters[
                f"{module}.lora_A.weight"]
        torch.testing.assert_close(merged[key], want, rtol=1e-6, atol=1e-7, msg=key)
    assert any(not torch.equal(merged[f"{m}.weight"], base[f"{m}.weight"].to(torch.bfloat16)
                               .float()) for m in modules)

    other = tmp_path / "other.safetensors"
    write_base(other, seed=1)
    capsys.readouterr()
    assert convert(["export-lora", str(step), str(tmp_path / "refused"), "--merge",
                    "--base", str(other)]) == 2  # refused (exit 2)
    assert "is not the one" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_start_from_a_diffusers_lora_file(train, lora_one, lora_base, tmp_path):
    """``finetune.init_lora``: the exported adapters start a run (B rescaled to its alpha);
    a file of another rank or other layers is one line."""
    from lct_train.convert.cli import main as convert

    assert convert(["export-lora", str(lora_one), str(tmp_path / "lora")]) == 0
    common = [*LORA, *BF16_BASE, f"stage.init_from={lora_base}", "steps=1", "optim.lr=0",
              "checkpoint.every=1", f"finetune.init_lora={tmp_path / 'lora'}"]
    status, err = train(*common, "finetune.alpha=4", f"run_dir={tmp_path / 'run'}")
    assert status == 0, err
    want = model_weights(ckpt(lora_one, DIST_STEPS), tmp_path / "want")
    got = model_weights(ckpt(tmp_path / "run", 1), tmp_path / "got")
    assert got.keys() == want.keys()
    for name, value in want.items():  # alpha 8 -> 4: B doubles, the product is the same
        scale = 2.0 if name.endswith("lora_B.weight") else 1.0
        torch.testing.assert_close(got[name], value * scale, rtol=1e-6, atol=0, msg=name)
    for extra, line in (
        (["finetune.rank=8"], "finetune.init_lora: {} has rank 4, finetune.rank is 8"),
        ([r"finetune.targets=['transformer_blocks\.\d+\.attn\.to_q']"],
         "finetune.init_lora: {} adapts 27 layer(s) this run does not (e.g. "),
    ):
        status, err = train(*common, *extra, f"run_dir={tmp_path / 'bad'}")
        assert status == 2
        want_line = "lct-train: config error: " + line.format(tmp_path / "lora")
        assert err.strip().splitlines()[-1].startswith(want_line), err


def test_stage2_continues_or_merges_the_stage1_adapters(train, lora_one, lora_base, tmp_path,
                                                        capsys):
    """Causal FT from a LoRA stage 1 (stage.init_run): ``continue`` starts from its adapters on
    its base; ``merge`` folds them into the base and starts new ones (B = 0). Before any update
    both are the same function: the same first loss (fp32 base)."""
    common = [*LORA, "stage=causal_ft", f"stage.init_run={lora_one}", "steps=1", "optim.lr=0",
              "checkpoint.every=1", "finetune.base_dtype=float32"]
    for mode in ("continue", "merge"):
        status, err = train(*common, f"finetune.from_lora={mode}", f"run_dir={tmp_path / mode}")
        assert status == 0, err
    stage1 = model_weights(ckpt(lora_one, DIST_STEPS), tmp_path / "stage1")
    cont = model_weights(ckpt(tmp_path / "continue", 1), tmp_path / "cont")
    merged = model_weights(ckpt(tmp_path / "merge", 1), tmp_path / "merged")
    for name, value in stage1.items():
        torch.testing.assert_close(cont[name], value, rtol=0, atol=0, msg=name)
        if name.endswith("lora_B.weight"):
            assert not merged[name].any(), name
    meta = json.loads((ckpt(tmp_path / "continue", 1) / "lct_meta.json").read_text())
    assert meta["lora"]["base"] == str(lora_base)  # export-lora --merge finds it
    status, err = train(*LORA, "stage.mask=causal", f"stage.init_from={lora_base}", "steps=1",
                        "checkpoint.enabled=false", "finetune.base_dtype=float32",
                        f"run_dir={tmp_path / 'base'}")
    assert status == 0, err
    first = {mode: losses(tmp_path / mode)[1] for mode in ("continue", "merge", "base")}
    assert first["merge"] == pytest.approx(first["continue"], rel=1e-6)
    assert first["base"] != pytest.approx(first["continue"], rel=1e-4)  # stage 1 did matter
    from lct_train.convert.cli import main as convert

    capsys.readouterr()  # the merged stage 2's base is stage 1's checkpoint: two-step export
    assert convert(["export-lora", str(tmp_path / "merge"), str(tmp_path / "x"), "--merge"]) == 2
    assert "then pass --base MERGED" in capsys.readouterr().err


def test_sampling_loads_a_lora_run_merged_on_its_base(lora_one, lora_base, tmp_path):
    """``lct-sample --ckpt <LoRA run>``: the recorded base (as the run held it, bf16) with the
    adapters merged, i.e. ``export-lora --merge``'s weights; the same as the base export plus
    the exported LoRA file (``--lora``)."""
    from safetensors.torch import load_file, save_file

    from lct_train.convert.cli import main as convert
    from lct_train.sample.checkpoint_io import CheckpointError, load_model

    assert convert(["export-lora", str(lora_one), str(tmp_path / "merged"), "--merge"]) == 0
    loaded = load_model(lora_one)
    assert loaded.mask == "bidirectional"
    state = loaded.model.state_dict()
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert state.keys() == merged.keys()
    for key, value in merged.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    base_export = tmp_path / "base"  # the base as an export (config.json), held as the run did
    base_export.mkdir()
    save_file({k: v.to(torch.bfloat16).float() for k, v in load_file(lora_base).items()},
              base_export / "model.safetensors")
    (base_export / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    assert convert(["export-lora", str(lora_one), str(tmp_path / "lora")]) == 0
    with_file = load_model(base_export, lora=tmp_path / "lora").model.state_dict()
    for key, value in merged.items():
        torch.testing.assert_close(with_file[key], value, rtol=1e-6, atol=1e-7, msg=key)
    with pytest.raises(CheckpointError, match="holds adapters"):
        load_model(lora_one, weights="ema")


def test_sigkill_and_resume_auto_gives_the_same_losses(lora_one, lora_base, tmp_path):
    """A LoRA job SIGKILLed after its step-2 checkpoint and resumed (resume=auto): the losses of
    the run that never stopped."""
    from lct_train.core.checkpoint_layout import is_valid

    args = [*DIST_COMMON, *LORA, *BF16_BASE, f"stage.init_from={lora_base}",
            f"run_dir={tmp_path}", "optim.grad_accum=2"]
    job = start(1, [*args, "debug.step_delay_s=1.0"], tmp_path.parent / "killed.log")
    deadline = time.monotonic() + 240
    while not is_valid(ckpt(tmp_path, 2)):
        assert job.poll() is None, (tmp_path.parent / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    kill_job(job)
    assert not is_valid(ckpt(tmp_path, DIST_STEPS)), "the job was not killed"
    run(1, [*args, "resume=auto"])
    assert_same_losses(losses(tmp_path), losses(lora_one), range(1, DIST_STEPS + 1))
