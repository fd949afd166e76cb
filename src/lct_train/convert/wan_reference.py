"""Fixed small single-shot Wan inputs and the two forwards `verify --reference` compares.

`WanModel` sees a one-shot scene without a global prompt and only the valid prompt tokens;
diffusers sees the prompt zero-padded to `text_len` (as Wan's pipelines pad it), timesteps on its
0..1000 scale. The two must agree (SPEC §8.2 on this family).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lct_train.convert.reference import DEFAULT_GRID, DEFAULT_TEXT_LEN, DEFAULT_TIMESTEP
from lct_train.convert.wan_config import DIFFUSERS_TIMESTEP_SCALE
from lct_train.model.geometry import patch_grid, patchify, unpatchify
from lct_train.model.wan import WanConfig, build_wan_meta, wan_scene


@dataclass
class WanSingleShotInput:
    latent: torch.Tensor  # [C, F, H, W]
    text: torch.Tensor  # [L_valid, text_dim]
    text_len: int  # the padded length (the model's `text_len`)
    timestep: float  # in [0, 1]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> WanSingleShotInput:
        return WanSingleShotInput(self.latent.to(device, dtype), self.text.to(device, dtype),
                                  self.text_len, self.timestep)


def wan_fixed_input(cfg: WanConfig, *, grid=DEFAULT_GRID, text_len: int = DEFAULT_TEXT_LEN,
                    timestep: float = DEFAULT_TIMESTEP, seed: int = 0) -> WanSingleShotInput:
    """A deterministic random single-shot input for `cfg` (fp32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.latent_channels, *(g * p for g, p in zip(grid, cfg.patch_size)))
    return WanSingleShotInput(torch.randn(shape, generator=gen),
                              torch.randn(text_len, cfg.text_dim, generator=gen), cfg.text_len,
                              timestep)


@torch.no_grad()
def run_wan(model: torch.nn.Module, cfg: WanConfig, inp: WanSingleShotInput) -> torch.Tensor:
    """`WanModel`'s velocity `[C, F, H, W]` on a one-shot scene without a global prompt."""
    latent = inp.latent
    grid = patch_grid(latent.shape, cfg.patch_size)
    meta = build_wan_meta([wan_scene([(len(inp.text), grid)])], text_len=cfg.text_len,
                          shot_gap=cfg.shot_gap, rope_offsets=cfg.rope_offsets,
                          device=latent.device)
    t = torch.tensor([inp.timestep], device=latent.device, dtype=latent.dtype)
    out = model(patchify(latent, cfg.patch_size), inp.text, None, t, meta)
    return unpatchify(out, grid, cfg.patch_size, cfg.latent_channels)


def rebuild_diffusers_rope(model: torch.nn.Module, device: torch.device | str) -> None:
    """diffusers' Wan keeps its RoPE table in non-persistent buffers: a model built on the meta
    device and filled from a state dict rebuilds them (its `rope` module) on ``device``."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = model.config
    with torch.device(device):
        model.rope = WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len)


@torch.no_grad()
def run_wan_diffusers(model: torch.nn.Module, inp: WanSingleShotInput) -> torch.Tensor:
    """diffusers' `WanTransformer3DModel` output `[C, F, H, W]` on the same input."""
    text = inp.text
    padded = torch.cat([text, text.new_zeros(inp.text_len - len(text), text.shape[1])])
    t = torch.tensor([inp.timestep * DIFFUSERS_TIMESTEP_SCALE], device=text.device,
                     dtype=text.dtype)
    return model(inp.latent[None], t, padded[None], return_dict=False)[0][0]
