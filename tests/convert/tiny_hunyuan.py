"""A tiny random diffusers HunyuanVideo transformer, built offline from a config (test helper)."""

from __future__ import annotations

import torch

TINY_DIFFUSERS_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=2,
    num_single_layers=1,
    num_refiner_layers=1,
    mlp_ratio=2.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_theta=256.0,
    rope_axes_dim=(2, 2, 4),
)
PARAM_NOISE = 0.2  # perturbs every weight (norm gains included) so that no mapping hides


def make_tiny_diffusers(seed: int = 0, **overrides):
    """A tiny `HunyuanVideoTransformer3DModel` with random weights everywhere, fp32, eval."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoTransformer3DModel(**{**TINY_DIFFUSERS_CONFIG, **overrides})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(PARAM_NOISE * torch.randn_like(param))
    return model.eval()
