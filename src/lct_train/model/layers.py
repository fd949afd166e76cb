"""Small building blocks with diffusers-compatible parameter names: timestep embedding, MLPs,
adaLN modulation (per group, expanded to tokens by index), attention projections."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_PERIOD = 10_000  # sinusoidal timestep embedding


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N] -> [N, dim]`` as diffusers' ``Timesteps(dim, flip_sin_to_cos=True, shift=0)``."""
    half = dim // 2
    exponent = (
        -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angle = t.float()[:, None] * exponent.exp()[None, :]
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


class TimestepEmbedding(nn.Module):
    """``linear_2(silu(linear_1(x)))`` (diffusers ``TimestepEmbedding``)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TextProjection(nn.Module):
    """Pooled-text projection (diffusers ``PixArtAlphaTextProjection`` with SiLU)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act_1 = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class ProjActivation(nn.Module):
    """``act(proj(x))``; the first layer of `FeedForward` (diffusers ``GELU``/``LinearActivation``)."""

    def __init__(self, dim: int, inner: int, activation: str):
        super().__init__()
        self.proj = nn.Linear(dim, inner)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return F.gelu(x, approximate="tanh") if self.activation == "gelu-tanh" else F.silu(x)


class FeedForward(nn.Module):
    """MLP ``net.2(net.0(x))``; ``net.1`` is diffusers' dropout slot (kept so names match)."""

    def __init__(self, dim: int, inner: int, activation: str = "gelu-tanh"):
        super().__init__()
        if activation not in ("gelu-tanh", "silu"):
            raise ValueError(f"FeedForward: unknown activation {activation!r}")
        self.net = nn.ModuleList(
            [ProjActivation(dim, inner, activation), nn.Identity(), nn.Linear(inner, dim)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with per-group ``shift, scale [G, D]`` expanded by ``group [N]``."""
    return torch.addcmul(shift[group], x, (1 + scale)[group])


class AdaLayerNormZero(nn.Module):
    """adaLN-zero: ``linear(silu(temb))`` gives ``chunks`` per-group vectors (shift, scale, gate...).

    ``forward(x, temb [G, D], group [N])`` returns the modulated norm of x and the remaining
    per-group chunks ``[G, D]`` (index them with ``group`` at use).
    """

    def __init__(self, dim: int, chunks: int, eps: float):
        super().__init__()
        self.chunks = chunks
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, chunks * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, group: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        shift, scale, *rest = self.linear(self.silu(temb)).chunk(self.chunks, dim=-1)
        return (modulate(self.norm(x), shift, scale, group), *rest)


class AdaLayerNormContinuous(nn.Module):
    """Final norm: ``norm(x) * (1 + scale) + shift``, ``scale, shift`` in that order (diffusers)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(temb)).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale, group)


def heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[N, H*D] -> [N, H, D]``."""
    return x.unflatten(-1, (num_heads, -1))
