"""Fixed small single-shot inputs and the two forwards compared by `verify --reference` and tests.

The LCT model sees a one-shot scene without a global group and only the valid text tokens;
diffusers sees the padded text with its mask, timesteps on its 0..1000 scale. On such a scene,
with text RoPE off, the two must agree (SPEC §8 invariant 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.geometry import patch_grid, patchify, unpatchify
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta

DEFAULT_GRID = (2, 2, 3)  # (F', H', W') latent patches: small, and not symmetric in h / w
DEFAULT_TEXT_LEN = 5
DEFAULT_TEXT_PAD = 3
DEFAULT_TIMESTEP = 0.37  # in [0, 1]
DEFAULT_GUIDANCE = 6.0  # guidance scale, as a HunyuanVideo pipeline passes it (x 1000 there)


@dataclass
class SingleShotInput:
    latent: torch.Tensor  # [C, F, H, W]
    text: torch.Tensor  # [L_valid + L_pad, text_dim], valid tokens first
    text_len: int  # valid tokens
    pooled: torch.Tensor  # [pooled_dim]
    timestep: float  # in [0, 1]
    guidance: float | None  # guidance scale (None: the model has no guidance embedding)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> SingleShotInput:
        return SingleShotInput(
            self.latent.to(device, dtype),
            self.text.to(device, dtype),
            self.text_len,
            self.pooled.to(device, dtype),
            self.timestep,
            self.guidance,
        )


def fixed_input(
    cfg: ModelConfig,
    *,
    grid: tuple[int, int, int] = DEFAULT_GRID,
    text_len: int = DEFAULT_TEXT_LEN,
    text_pad: int = DEFAULT_TEXT_PAD,
    timestep: float = DEFAULT_TIMESTEP,
    seed: int = 0,
) -> SingleShotInput:
    """A deterministic random single-shot input for `cfg` (fp32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    pt, ph, pw = cfg.patch_size
    f, h, w = grid
    shape = (cfg.latent_channels, f * pt, h * ph, w * pw)
    return SingleShotInput(
        latent=torch.randn(shape, generator=gen),
        text=torch.randn(text_len + text_pad, cfg.text_dim, generator=gen),
        text_len=text_len,
        pooled=torch.randn(cfg.pooled_dim, generator=gen),
        timestep=timestep,
        guidance=DEFAULT_GUIDANCE if cfg.guidance_embeds else None,
    )


@torch.no_grad()
def run_lct(model: torch.nn.Module, cfg: ModelConfig, inp: SingleShotInput) -> torch.Tensor:
    """The LCT model's velocity `[C, F, H, W]` on a one-shot scene without global group."""
    latent = inp.latent
    grid = patch_grid(latent.shape, cfg.patch_size)
    spec = SceneSpec(groups=(GroupSpec(text_len=inp.text_len, grid=grid),))
    meta = build_packed_meta(
        [spec], mask="bidirectional", text_rope=cfg.text_rope, device=latent.device
    )
    kwargs = {}
    if inp.guidance is not None:
        kwargs["guidance"] = torch.tensor([inp.guidance], device=latent.device, dtype=latent.dtype)
    out = model(
        patchify(latent, cfg.patch_size),
        inp.text[: inp.text_len],
        inp.pooled[None],
        torch.tensor([inp.timestep], device=latent.device, dtype=latent.dtype),
        meta,
        **kwargs,
    )
    return unpatchify(out, grid, cfg.patch_size, cfg.latent_channels)


@torch.no_grad()
def run_diffusers(
    model: torch.nn.Module, inp: SingleShotInput, timestep_scale: float
) -> torch.Tensor:
    """diffusers' `HunyuanVideoTransformer3DModel` output `[C, F, H, W]` on the same input."""
    device, dtype = inp.latent.device, inp.latent.dtype
    mask = torch.zeros(1, inp.text.shape[0], dtype=torch.long, device=device)
    mask[:, : inp.text_len] = 1
    guidance = None
    if inp.guidance is not None:
        guidance = torch.tensor([inp.guidance * timestep_scale], device=device, dtype=dtype)
    out = model(
        hidden_states=inp.latent[None],
        timestep=torch.tensor([inp.timestep * timestep_scale], device=device, dtype=dtype),
        encoder_hidden_states=inp.text[None],
        encoder_attention_mask=mask,
        pooled_projections=inp.pooled[None],
        guidance=guidance,
        return_dict=False,
    )[0]
    return out[0]
