"""Presets (conf/model/*.yaml): parameter counts, built on the meta device (SPEC §8.1)."""

import warnings

import pytest
import torch

from lct_train.model.config import ModelConfig
from lct_train.model.mmdit import LCTModel
from tests.model.wan.wan_testutils import WAN_PRESET_PARAMS
from tests.testutils import PRESETS, tiny_config

EXPECTED_PARAMS = {
    "tiny": 107_888,
    "small": 3_364_672,
    "lct-3b": 3_183_491_136,
    "hunyuan-video": 12_821_012_544,
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_on_meta(cfg: ModelConfig) -> LCTModel:
    with torch.device("meta"):
        return LCTModel(cfg)


def _preset_count(preset: str) -> int:
    return _count(_build_on_meta(ModelConfig.from_yaml(PRESETS / f"{preset}.yaml")))


@pytest.mark.parametrize("preset", sorted(EXPECTED_PARAMS))
def test_preset_parameter_count(preset):
    assert _preset_count(preset) == EXPECTED_PARAMS[preset]


def test_presets_on_disk_are_the_tested_ones():
    """MMDiT presets here, Wan-family ones in tests/model/wan/test_wan_model.py."""
    tested = {*EXPECTED_PARAMS, *WAN_PRESET_PARAMS}
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(tested)


def test_size_classes():
    """The built models (not the table above) are in their size classes."""
    assert _preset_count("tiny") < 1_000_000
    assert 2.5e9 < _preset_count("lct-3b") < 3.5e9
    cfg = ModelConfig.from_yaml(PRESETS / "lct-3b.yaml")
    assert cfg.num_single_blocks == 0  # paper scale: all dual-stream


def test_hunyuan_video_preset_has_the_source_models_parameters():
    """SPEC §8.1: the LCT model has exactly the single-shot model's parameters (names and shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import HunyuanVideoTransformer3DModel
    with torch.device("meta"):
        source = HunyuanVideoTransformer3DModel()
    ours = _build_on_meta(ModelConfig.from_yaml(PRESETS / "hunyuan-video.yaml"))
    source_shapes = {n: p.numel() for n, p in source.named_parameters()}
    our_shapes = {n: p.numel() for n, p in ours.named_parameters()}
    assert our_shapes == source_shapes
    assert _count(ours) == _count(source) == EXPECTED_PARAMS["hunyuan-video"]


@pytest.mark.parametrize("overrides", [{"text_rope": False}, {"attn_backend": "flex"}])
def test_lct_switches_add_no_parameters(overrides):
    cfg = tiny_config()
    switched = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    assert _count(_build_on_meta(switched)) == _count(_build_on_meta(cfg))
