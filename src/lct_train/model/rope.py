"""Interleaved 3D RoPE (SPEC §3) with HunyuanVideo's frequency convention.

The head dim is sectioned ``t | h | w`` (sizes ``rope_axes_dim``); inside each section adjacent
channel pairs ``(2i, 2i+1)`` rotate by ``coord * theta ** (-2i / section)``. cos/sin are computed
once per forward for the whole joint sequence from `PackedMeta.rope_coords`; rows that get no
rotation (text with text RoPE off) have cos = 1, sin = 0.
"""

from __future__ import annotations

import torch

FREQ_DTYPE = torch.float32  # as diffusers' get_1d_rotary_pos_embed


def rope_cos_sin(
    coords: torch.Tensor,
    rotate: torch.Tensor,
    axes_dim: tuple[int, int, int],
    theta: float,
    dtype: torch.dtype = torch.float32,
    freq_dtype: torch.dtype = FREQ_DTYPE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``coords [L, 3]`` int, ``rotate [L]`` bool -> ``cos, sin [L, sum(axes_dim)]``; angles are
    computed in ``freq_dtype`` (Wan's diffusers tables: float64), then cast to ``dtype``."""
    angles = []
    for axis, dim in enumerate(axes_dim):
        exponent = torch.arange(0, dim, 2, dtype=freq_dtype, device=coords.device) / dim
        freqs = 1.0 / (theta**exponent)
        angles.append(
            torch.outer(coords[:, axis].to(freq_dtype), freqs).repeat_interleave(2, dim=1)
        )
    angle = torch.cat(angles, dim=1)
    keep = rotate[:, None]
    cos = torch.where(keep, angle.cos(), 1.0).to(dtype)
    sin = torch.where(keep, angle.sin(), 0.0).to(dtype)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [L, H, D]`` rotated pairwise; computed in ``cos.dtype`` (>= fp32), returned in x's dtype."""
    real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (x.to(cos.dtype) * cos + rotated.to(cos.dtype) * sin).to(x.dtype)
