"""Weight-free similarity between shots, for videos without ground truth (docs/eval.md).

Frames are ``uint8 [T, H, W, 3]`` tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HIST_LEVELS = 8  # quantisation levels per RGB channel of the colour histogram
SSIM_SIZE = 32  # frames are area-downsampled to SSIM_SIZE x SSIM_SIZE luminance
SSIM_WINDOW = 7
SSIM_SIGMA = 1.5
SSIM_C1, SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def colour_histogram(frames: torch.Tensor, levels: int = HIST_LEVELS) -> torch.Tensor:
    """Normalised histogram over ``levels**3`` quantised RGB colours of all frames."""
    q = (frames.reshape(-1, 3).long() * levels // 256).clamp_max(levels - 1)
    idx = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    hist = torch.bincount(idx, minlength=levels**3).double()
    return hist / hist.sum()


def histogram_intersection(a: torch.Tensor, b: torch.Tensor) -> float:
    """``sum_c min(h_a(c), h_b(c))`` of two shots' colour histograms, in [0, 1]."""
    return float(torch.minimum(colour_histogram(a), colour_histogram(b)).sum())


def _luma(frame: torch.Tensor) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[1, 1, S, S]`` float luminance (BT.601), area-downsampled."""
    rgb = frame.double().permute(2, 0, 1)
    y = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None, None]
    return F.adaptive_avg_pool2d(y, SSIM_SIZE)


def _window() -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window) of two ``[H, W, 3]`` frames after
    downsampling both to ``SSIM_SIZE``² luminance."""
    x, y, w = _luma(a), _luma(b), _window()
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx**2 + my**2 + SSIM_C1) * (sxx + syy + SSIM_C2)
    return float((num / den).mean())


def shot_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM between the middle frames of two shots."""
    return ssim(a[a.shape[0] // 2], b[b.shape[0] // 2])
