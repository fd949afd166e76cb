"""Rectified-flow arithmetic shared by training and sampling (SPEC §5).

Convention: ``z_t = (1 - t) * z_0 + t * eps`` with ``t`` in [0, 1] (1 = pure noise); the
model regresses the velocity ``eps - z_0``.
"""

from __future__ import annotations

import torch


def logit_normal(
    shape: tuple[int, ...] | torch.Size,
    mean: float,
    std: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Samples ``sigmoid(N(mean, std))`` (the per-shot training timestep distribution)."""
    normal = torch.randn(shape, generator=generator, device=device) * std + mean
    return torch.sigmoid(normal)


def noise_latents(z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``z_t`` for per-row timesteps ``t`` (broadcast over the trailing dimensions)."""
    t = t.to(z0.dtype).reshape(t.shape + (1,) * (z0.dim() - t.dim()))
    return (1.0 - t) * z0 + t * eps


def velocity_target(z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The regression target ``eps - z_0``."""
    return eps - z0


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution-dependent shift ``s t / (1 + (s - 1) t)`` (SD3 / HunyuanVideo convention)."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def euler_step(z_t: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of the flow ODE ``dz/dt = v`` from ``t`` to ``t_next`` (< t)."""
    return z_t + (t_next - t) * velocity
