"""Sizes for the VAE and the model: keep the aspect ratio, hit a pixel area, snap to a multiple."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAPER_AREA = 480 * 480


def target_size(height: int, width: int, area: int, multiple: int) -> tuple[int, int]:
    """``(h, w)`` with ``h * w ~= area``, ``h / w ~= height / width``, both multiples of ``multiple``."""
    if min(height, width, area, multiple) < 1:
        raise ValueError(f"target_size: bad input {height}x{width}, area={area}, multiple={multiple}")
    scale = math.sqrt(area / (height * width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``uint8 [T, H, W, 3]`` -> ``uint8 [T, h, w, 3]`` (antialiased bilinear)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
