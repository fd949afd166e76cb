"""Real video input with PyAV: decode a shot at a target fps, read whole videos and images.

Used by shard building (``data_tools``) and by the sampler's condition media. Writing mp4 is
``lct_train.sample.writers.write_mp4`` (the one encoder of the project).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> torch.Tensor:
    """``uint8 [1, H, W, 3]``."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).unsqueeze(0)  # a writable copy


def read_video(path: str | Path) -> torch.Tensor:
    """Every frame of a video file (or the one of an image): ``uint8 [T, H, W, 3]``.

    Raises ``ValueError`` when the file decodes to no frames and PyAV's errors when it cannot
    be opened as a video."""
    if is_image(path):
        return read_image(path)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return torch.from_numpy(np.stack(frames))


def decode_shot(path: str | Path, fps: float, start: float | None = None, end: float | None = None,
                max_frames: int | None = None) -> torch.Tensor:
    """Frames of ``[start, end)`` sampled at ``fps`` (nearest earlier frame): ``uint8 [T, H, W, 3]``."""
    if is_image(path):
        return read_image(path)
    start = start or 0.0
    frames: list[np.ndarray] = []
    next_t = start
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = None
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time or 0.0)
            if end is not None and t >= end - 1e-6:
                break
            if t < start - 1e-6:
                continue
            last = frame
            while t + 1e-6 >= next_t:
                frames.append(last.to_ndarray(format="rgb24"))
                next_t += 1.0 / fps
                if max_frames is not None and len(frames) >= max_frames:
                    break
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no frames decoded in [{start}, {end})")
    return torch.from_numpy(np.stack(frames))
