"""Output writers: per-shot latents (safetensors), mp4 videos (PyAV, libx264), contact sheet (PIL).

Videos come in as the codecs' decode output (``[T, 3, H, W]`` float in ``[-1, 1]``) and are
written from ``[T, H, W, 3]`` uint8 frames (``to_uint8_frames``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import save_file

from lct_train.data.codecs import tensor_to_frames

DEFAULT_FPS = 24
IMAGE_HOLD_SECONDS = 1.0  # a 1-frame shot is shown this long in the scene video
CRF = 18  # visually lossless x264 quality
THUMB_HEIGHT = 96  # contact-sheet frame height in pixels
FRAMES_PER_ROW = 6
CAPTION_HEIGHT = 14
CAPTION_CHARS = 160
PAD = 4
BACKGROUND = (16, 16, 16)
CAPTION_COLOR = (235, 235, 235)


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``[T, 3, H, W]`` in ``[-1, 1]`` -> ``[T, H, W, 3]`` uint8."""
    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"expected a [T, 3, H, W] video, got shape {tuple(video.shape)}")
    return tensor_to_frames(video.detach().float().cpu()).contiguous().numpy()


def write_latents(path: str | os.PathLike, latents: dict[str, torch.Tensor]) -> None:
    """One safetensors file, one tensor per name (e.g. ``latent``)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in latents.items()}, str(path))


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray | torch.Tensor,
    fps: float = DEFAULT_FPS,
    crf: int = CRF,
) -> None:
    """H.264 / yuv420p mp4 of ``[F, H, W, 3]`` uint8 frames; odd sizes are edge-padded to even.

    The one mp4 encoder of the project (the sampler's outputs, ``data_tools`` synthetic
    videos). ``fps`` may be fractional; parent folders are created; the file is written under a
    temporary name and renamed, so a killed write leaves no truncated ``path``.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected [F, H, W, 3] uint8 frames, got {frames.shape} {frames.dtype}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def scene_frames(shots: Sequence[np.ndarray], fps: int = DEFAULT_FPS) -> np.ndarray:
    """All shots one after another, each centred on a black canvas of the largest size."""
    height = max(s.shape[1] for s in shots)
    width = max(s.shape[2] for s in shots)
    hold = max(1, round(IMAGE_HOLD_SECONDS * fps))
    out = []
    for shot in shots:
        if shot.shape[0] == 1:
            shot = np.repeat(shot, hold, axis=0)
        canvas = np.zeros((shot.shape[0], height, width, 3), dtype=np.uint8)
        top, left = (height - shot.shape[1]) // 2, (width - shot.shape[2]) // 2
        canvas[:, top:top + shot.shape[1], left:left + shot.shape[2]] = shot
        out.append(canvas)
    return np.concatenate(out, axis=0)


def write_contact_sheet(
    path: str | os.PathLike,
    shots: Sequence[np.ndarray],
    captions: Sequence[str],
    frames_per_row: int = FRAMES_PER_ROW,
) -> None:
    """PNG with one row per shot: a caption line, then up to ``frames_per_row`` evenly spaced
    frames scaled to ``THUMB_HEIGHT``."""
    if len(shots) != len(captions):
        raise ValueError(f"{len(shots)} shots but {len(captions)} captions")
    font = ImageFont.load_default()
    rows = []
    for shot in shots:
        picks = np.unique(np.linspace(0, shot.shape[0] - 1, frames_per_row).round().astype(int))
        scale = THUMB_HEIGHT / shot.shape[1]
        size = (max(1, round(shot.shape[2] * scale)), THUMB_HEIGHT)
        rows.append([Image.fromarray(shot[i]).resize(size, Image.BILINEAR) for i in picks])
    captions = [c[:CAPTION_CHARS] for c in captions]
    text_width = max(round(font.getlength(c)) for c in captions)
    width = max(max(sum(t.width + PAD for t in row) for row in rows), text_width + PAD) + PAD
    row_h = CAPTION_HEIGHT + THUMB_HEIGHT + 2 * PAD
    sheet = Image.new("RGB", (width, row_h * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, (row, caption) in enumerate(zip(rows, captions)):
        top = r * row_h + PAD
        draw.text((PAD, top), caption, fill=CAPTION_COLOR, font=font)
        left = PAD
        for thumb in row:
            sheet.paste(thumb, (left, top + CAPTION_HEIGHT))
            left += thumb.width + PAD
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(str(path))


def write_sheet_grid(
    path: str | os.PathLike,
    rows: Sequence[Sequence[tuple[str | os.PathLike, str]]],
    max_tile_width: int = 420,
) -> None:
    """PNG of contact sheets side by side: each row a list of ``(sheet png, label)``, every
    tile cropped to ``max_tile_width`` and titled with its label (model comparisons)."""
    if not rows or not all(rows):
        raise ValueError("write_sheet_grid: every row needs at least one tile")
    font = ImageFont.load_default()
    lines = []
    for row in rows:
        tiles = []
        for image_path, label in row:
            with Image.open(image_path) as im:
                image = im.convert("RGB").crop((0, 0, min(im.width, max_tile_width), im.height))
            tile = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT + PAD), BACKGROUND)
            ImageDraw.Draw(tile).text((PAD, 2), label, fill=CAPTION_COLOR, font=font)
            tile.paste(image, (0, CAPTION_HEIGHT + PAD))
            tiles.append(tile)
        line = Image.new("RGB", (sum(t.width + 2 * PAD for t in tiles),
                                 max(t.height for t in tiles)), (0, 0, 0))
        x = 0
        for tile in tiles:
            line.paste(tile, (x, 0))
            x += tile.width + 2 * PAD
        lines.append(line)
    sheet = Image.new("RGB", (max(line.width for line in lines),
                              sum(line.height + 2 * PAD for line in lines)), (0, 0, 0))
    y = 0
    for line in lines:
        sheet.paste(line, (0, y))
        y += line.height + 2 * PAD
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(str(path))
