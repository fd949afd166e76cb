"""Wan-model test helpers: a tiny config unlike the presets, a random diffusers reference model
with the same weights, scenes and random inputs of a packed batch."""

from __future__ import annotations

import warnings

import torch

from lct_train.convert.wan_config import config_to_diffusers
from lct_train.model.wan import WanConfig, WanModel, build_wan_meta

PARAM_NOISE = 0.2  # perturbs every weight (norm gains included) so that no mapping hides
WAN_PRESET_PARAMS = {  # diffusers' WanTransformer3DModel of the same config, counted on meta
    "wan2.1-1.3b": 1_418_996_800,
    "wan2.1-14b": 14_288_491_584,
    "wan2.2-ti2v-5b": 4_999_787_712,
    "wan-small": 1_806_784,  # the Wan demo (conf/experiment/demo_wan.yaml)
    "tiny-wan": 25_592,  # the training tests' preset
}
TINY = dict(latent_channels=4, num_heads=2, head_dim=12, num_layers=2, ffn_dim=32, text_dim=16,
            text_len=24)


def tiny_wan_config(**overrides) -> WanConfig:
    return WanConfig(**{**TINY, **overrides})


def diffusers_wan(cfg: WanConfig, seed: int = 0):
    """A random diffusers `WanTransformer3DModel` of `cfg` (every weight perturbed), eval."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import WanTransformer3DModel
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**config_to_diffusers(cfg), "rope_max_seq_len": 64})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(PARAM_NOISE * torch.randn_like(param))
    return model.eval()


def lct_state(source) -> dict[str, torch.Tensor]:
    """diffusers' state dict with the patch embedding's Conv3d kernel flattened (the one layout
    difference)."""
    state = dict(source.state_dict())
    state["patch_embedding.weight"] = state["patch_embedding.weight"].flatten(1)
    return state


def wan_pair(cfg: WanConfig | None = None, seed: int = 0):
    """(diffusers model, WanModel) with the same weights, fp32, eval."""
    cfg = cfg or tiny_wan_config()
    source = diffusers_wan(cfg, seed)
    model = WanModel(cfg).eval()
    model.load_state_dict(lct_state(source), strict=True)
    return source, model


def tiny_wan_model(seed: int = 0, **overrides) -> WanModel:
    return wan_pair(tiny_wan_config(**overrides), seed)[1]


def meta_for(cfg: WanConfig, specs, mask: str = "bidirectional", **kwargs):
    settings = dict(text_len=cfg.text_len, shot_gap=cfg.shot_gap, rope_offsets=cfg.rope_offsets)
    return build_wan_meta(specs, mask=mask, **{**settings, **kwargs})


def random_wan_inputs(cfg: WanConfig, meta, seed: int = 0, dtype=torch.float32):
    """``video [Nv, patch_dim]``, ``text [Nt, text_dim]``, ``timesteps [G]`` (global groups 0)."""
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(meta.num_video, cfg.patch_dim, generator=gen, dtype=dtype)
    text = torch.randn(meta.num_text, cfg.text_dim, generator=gen, dtype=dtype)
    timesteps = torch.rand(meta.num_groups, generator=gen, dtype=dtype)
    is_global = torch.tensor([g.is_global for s in meta.specs for g in s.groups])
    timesteps[is_global] = 0.0
    return video, text, timesteps


def run(model, meta, video, text, timesteps, **kwargs):
    return model(video, text, None, timesteps, meta, **kwargs)
