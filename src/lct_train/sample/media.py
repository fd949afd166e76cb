"""Pixels <-> latents for sampling: shot sizes to latent shapes, condition media to latents.

Uses the data package's codecs (``lct_train.data.codecs``: frames ``[T, 3, H, W]`` in
``[-1, 1]``, latents ``[C, F, h, w]`` already scaled). A condition may be an image (a 1-frame
shot: compositional generation), a video, or a ``.safetensors`` latent (key ``latent`` or its
only tensor).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lct_train.data.codecs import frames_to_tensor
from lct_train.data.video_io import read_video
from lct_train.model.geometry import patch_grid
from lct_train.sample.scene_file import ShotSize

LATENT_SUFFIX = ".safetensors"


class MediaError(ValueError):
    """A condition file or shot size the codec / model cannot take; names the file or size."""


def latent_shape(codec, size: ShotSize, patch: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """``(C, F, h, w)`` of a shot of pixel ``size`` (after the codec), checked against the patch."""
    frames = codec.valid_frames(size.frames)
    if frames != size.frames:
        raise MediaError(f"{size.frames} frames is not a length the codec takes (nearest below: "
                         f"{frames})")
    sf = codec.spatial_factor
    if size.height % sf or size.width % sf:
        raise MediaError(f"size {size.height}x{size.width} is not a multiple of the codec's "
                         f"spatial factor {sf}")
    shape = (codec.latent_channels, codec.latent_frames(frames), size.height // sf, size.width // sf)
    try:
        patch_grid(shape, patch)
    except ValueError:
        raise MediaError(f"size {size} gives latent {shape}, not divisible by the patch {patch}") from None
    return shape


def read_frames(path: str | os.PathLike) -> torch.Tensor:
    """An image or video file -> ``[T, 3, H, W]`` in ``[-1, 1]``."""
    try:
        return frames_to_tensor(read_video(path))
    except (av.FFmpegError, IndexError, OSError) as exc:  # OSError: PIL's unreadable image
        raise MediaError(f"condition {path}: cannot decode as video or image: {exc}") from exc
    except ValueError as exc:
        raise MediaError(f"condition {path}: {exc}") from exc


def fit_frames(frames: torch.Tensor, codec, size: ShotSize | None) -> torch.Tensor:
    """Resizes to ``size`` (or rounds the native size down to the codec's multiples) and keeps
    the longest frame count the codec takes, at most ``size.frames``."""
    sf = codec.spatial_factor
    if size is None:
        height, width = frames.shape[2] // sf * sf, frames.shape[3] // sf * sf
        count = frames.shape[0]
    else:
        height, width, count = size.height, size.width, min(size.frames, frames.shape[0])
    if height < sf or width < sf:
        raise MediaError(f"frames of {frames.shape[2]}x{frames.shape[3]} are smaller than the "
                         f"codec's factor {sf}")
    frames = frames[: codec.valid_frames(count)]
    if tuple(frames.shape[2:]) != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bilinear", antialias=True,
                               align_corners=False)
    return frames


def encode_condition(path: str | os.PathLike, codec, size: ShotSize | None) -> torch.Tensor:
    """A condition file -> clean latent ``[C, F, h, w]``."""
    path = Path(path)
    if path.suffix == LATENT_SUFFIX:
        tensors = load_file(str(path))
        latent = tensors.get("latent", next(iter(tensors.values())) if len(tensors) == 1 else None)
        if latent is None:
            raise MediaError(f"condition {path}: no 'latent' tensor among {sorted(tensors)}")
        if latent.dim() != 4:
            raise MediaError(f"condition {path}: latent must be [C, F, H, W], got "
                             f"{tuple(latent.shape)}")
        return latent.float()
    return codec.encode(fit_frames(read_frames(path), codec, size)).float()


def read_noise(path: str | os.PathLike, shape: tuple[int, ...]) -> torch.Tensor:
    """A shot's initial noise file: one tensor of the shot's latent ``shape`` (fp32, finite)."""
    want = f"one tensor of the shot's latent shape [C, F, h, w] = {list(shape)}"
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"noise {path} does not exist (expected a .safetensors file with {want})")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on a corrupt file
        raise MediaError(f"noise {path}: not a readable .safetensors file ({exc}); expected "
                         f"{want}") from None
    if len(tensors) != 1:
        raise MediaError(f"noise {path}: holds {len(tensors)} tensors {sorted(tensors)}, "
                         f"expected {want}")
    noise = next(iter(tensors.values()))
    if tuple(noise.shape) != tuple(shape):
        raise MediaError(f"noise {path}: shape {list(noise.shape)}, expected {want}")
    if not noise.is_floating_point() or not torch.isfinite(noise).all():
        raise MediaError(f"noise {path}: not finite floating-point values; expected {want}")
    return noise.float()
