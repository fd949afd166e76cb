"""The sampling time grid: shifted Euler timesteps from 1 (noise) to 0 (data), and seeded noise.

Resolution rule for the shift (used when neither the scene nor the model config sets one):
SD3's timestep shifting keeps the signal-to-noise ratio per token constant across resolutions,
``shift = sqrt(n / n_ref)`` for ``n`` latent tokens of the generated shot. ``n_ref`` is chosen
so that SD3's 1024² images (4096 tokens) get SD3's shift 3.0; the result is clamped to
``[1, MAX_SHIFT]`` where ``MAX_SHIFT`` is HunyuanVideo's largest recommended ``flow_shift``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lct_train.core.flow import shift_timesteps

SD3_REFERENCE_TOKENS = 4096
SD3_REFERENCE_SHIFT = 3.0
REFERENCE_TOKENS = SD3_REFERENCE_TOKENS / SD3_REFERENCE_SHIFT**2
MAX_SHIFT = 17.0


def resolution_shift(num_tokens: int) -> float:
    """Default timestep shift for a shot of ``num_tokens`` latent patches (module docstring)."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    return min(MAX_SHIFT, max(1.0, math.sqrt(num_tokens / REFERENCE_TOKENS)))


def sampling_timesteps(steps: int, shift: float) -> list[float]:
    """``steps + 1`` decreasing times ``t_0 = 1 > ... > t_steps = 0`` with the shift applied."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return [float(t) for t in shift_timesteps(grid, shift)]


@dataclass(frozen=True)
class ShotNoise:
    """The two noise draws of one shot's seed: the ODE start and the t_c conditioning noise."""

    initial: torch.Tensor
    condition: torch.Tensor


def shot_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> ShotNoise:
    """Noise of a shot from its seed (CPU generator, so results do not depend on the device).

    The first draw starts the ODE when the shot is generated; the second noises the shot to
    ``t_c`` whenever it is a condition (a given shot, or a history shot of a later shot).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    initial = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    condition = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return ShotNoise(initial=initial, condition=condition)
