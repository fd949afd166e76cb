"""diffusers HunyuanVideo -> LCT: every key mapped, and a one-shot scene gives diffusers' output."""

from __future__ import annotations

import pytest
import torch

from lct_train.convert.cli import main
from lct_train.convert.diffusers_io import diffusers_expected_shapes
from lct_train.convert.hunyuan_config import config_from_diffusers, config_to_diffusers
from lct_train.convert.hunyuan_keymap import HunyuanVideoStateDictAdapter
from lct_train.convert.key_plan import check_plan
from lct_train.convert.model_spec import expected_shapes, read_model_config
from lct_train.convert.reference import fixed_input, run_diffusers, run_lct
from lct_train.convert.verify import load_lct_model
from tests.convert.tiny_hunyuan import TINY_DIFFUSERS_CONFIG, make_tiny_diffusers

RTOL = 1e-5  # fp32: max |lct - diffusers| / max |diffusers|
DIFFUSERS_TIMESTEP_SCALE = 1000.0


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_diffusers_dir):
    out = tmp_path_factory.mktemp("import") / "lct"
    assert main(["import-diffusers", str(tiny_diffusers_dir), str(out)]) == 0
    model, cfg = load_lct_model(out)
    return model, cfg, out


def test_config_maps_architecture(imported):
    _, cfg, _ = imported
    d = TINY_DIFFUSERS_CONFIG
    assert cfg.text_rope is False  # the source has no text RoPE (SPEC §3)
    assert cfg.patch_size == (d["patch_size_t"], d["patch_size"], d["patch_size"])
    assert (cfg.num_dual_blocks, cfg.num_single_blocks) == (d["num_layers"], d["num_single_layers"])
    assert cfg.rope_axes_dim == tuple(d["rope_axes_dim"])
    assert config_to_diffusers(cfg) == {
        **d,
        "rope_axes_dim": list(d["rope_axes_dim"]),
        "image_condition_type": None,
    }


def test_parameter_count_equals_source(imported, tiny_diffusers):
    model, _, _ = imported  # SPEC §8.1: LCT adds no parameters
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in tiny_diffusers.parameters()
    )


def test_weights_copied_exactly(imported, tiny_diffusers):
    model, _, _ = imported
    ours, theirs = model.state_dict(), tiny_diffusers.state_dict()
    conv = theirs["x_embedder.proj.weight"]
    assert torch.equal(ours["x_embedder.proj.weight"], conv.reshape(conv.shape[0], -1))
    for key in theirs.keys() - {"x_embedder.proj.weight"}:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("text_pad", [0, 3], ids=["all-valid-text", "padded-text"])
def test_single_shot_output_matches_diffusers(imported, tiny_diffusers, text_pad):
    model, cfg, _ = imported  # SPEC §8 invariant 2, fp32
    inp = fixed_input(cfg, text_pad=text_pad, seed=text_pad)
    got = run_lct(model, cfg, inp)
    want = run_diffusers(tiny_diffusers, inp, DIFFUSERS_TIMESTEP_SCALE)
    assert got.shape == want.shape == inp.latent.shape
    assert _relative_error(got, want) < RTOL


def test_output_matches_at_other_timestep_and_grid(imported, tiny_diffusers):
    model, cfg, _ = imported
    inp = fixed_input(cfg, grid=(3, 2, 2), text_len=2, text_pad=1, timestep=0.9, seed=5)
    got = run_lct(model, cfg, inp)
    want = run_diffusers(tiny_diffusers, inp, DIFFUSERS_TIMESTEP_SCALE)
    assert _relative_error(got, want) < RTOL


@pytest.mark.parametrize(
    "overrides",
    [
        dict(guidance_embeds=False),
        dict(num_refiner_layers=2, num_single_layers=0),
        dict(patch_size_t=2, num_layers=0),
    ],
    ids=["no-guidance", "two-refiners-no-single", "temporal-patch-single-only"],
)
def test_key_map_covers_variants(overrides):
    """Every diffusers key of other layouts is mapped and yields every LCT key (meta device)."""
    from diffusers import HunyuanVideoTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**{**TINY_DIFFUSERS_CONFIG, **overrides})
    cfg = config_from_diffusers(dict(model.config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    adapter = HunyuanVideoStateDictAdapter(cfg)
    plan = adapter.from_diffusers(shapes)
    lct = check_plan(plan, shapes, expected_shapes(cfg), source_name="d", target_name="lct")
    back = check_plan(
        adapter.to_diffusers(lct),
        lct,
        diffusers_expected_shapes(cfg),
        source_name="l",
        target_name="d",
    )
    assert back == shapes


def test_temporal_patch_output_matches(tmp_path):
    """patch_size_t > 1 exercises the Conv3d -> Linear flatten order (c, pt, ph, pw)."""
    source = make_tiny_diffusers(seed=3, patch_size_t=2)
    source.save_pretrained(tmp_path / "src", safe_serialization=True)
    assert main(["import-diffusers", str(tmp_path / "src"), str(tmp_path / "lct")]) == 0
    model, cfg = load_lct_model(tmp_path / "lct")
    inp = fixed_input(cfg, grid=(2, 2, 2))
    got = run_lct(model, cfg, inp)
    assert _relative_error(got, run_diffusers(source, inp, DIFFUSERS_TIMESTEP_SCALE)) < RTOL


def test_base_config_supplies_non_diffusers_fields(tmp_path, tiny_diffusers_dir):
    base = tmp_path / "base.yaml"
    base.write_text("dummy_grid: [1, 4, 4]\nattn_backend: reference\ntext_rope: true\n")
    out = tmp_path / "lct"
    assert (
        main(["import-diffusers", str(tiny_diffusers_dir), str(out), "--base-config", str(base)])
        == 0
    )
    cfg = read_model_config(out)
    assert (cfg.dummy_grid, cfg.attn_backend) == ((1, 4, 4), "reference")
    assert cfg.text_rope is False  # always off on import: the source has no text RoPE
    assert cfg.num_heads == TINY_DIFFUSERS_CONFIG["num_attention_heads"]  # from diffusers
