"""One manifest scene -> one shard sample: decode each shot, resize, encode latents and prompts.

A scene's shots are VAE-encoded in batches (``encode_calls``): shots of one frame shape
``(T, h, w)`` share a call, at most ``encode_frames`` frames per call, in manifest order; a shot
longer than the cap is a call of its own. Frames stay uint8 until their call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from data_tools.manifest import SceneEntry
from data_tools.resize import resize_frames, target_size
from lct_train.data.codecs import frames_to_tensor
from lct_train.data.schema import encode_scene
from lct_train.data.video_io import decode_shot


@dataclass
class FrameSpec:
    """How shots become frames: sampling rate, pixel area, size multiple, frame cap."""

    fps: float
    area: int
    multiple: int  # VAE spatial factor x model patch: every size is a multiple of it
    max_frames: int | None = None


def encode_prompts(text_encoder, prompts: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Valid token embeddings per prompt and the pooled rows ``[len(prompts), Dp]``."""
    batch = text_encoder.encode(prompts)
    return [batch.valid(i) for i in range(len(prompts))], batch.pooled


def shot_pixels(shot, spec: FrameSpec, codec) -> torch.Tensor:
    """``uint8 [T, h, w, 3]``, T valid for the codec, (h, w) at the target area."""
    frames = decode_shot(shot.path, spec.fps, shot.start, shot.end, spec.max_frames)
    frames = frames[: codec.valid_frames(frames.shape[0])]
    size = target_size(frames.shape[1], frames.shape[2], spec.area, spec.multiple)
    return resize_frames(frames, size)


def encode_calls(shapes: Sequence[tuple[int, ...]], encode_frames: int) -> list[list[int]]:
    """Shot indices of each VAE call: shots of one shape (frames first) in order, a call full
    once another shot would take it past ``encode_frames`` frames (a longer shot: alone)."""
    calls: list[list[int]] = []
    open_calls: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        call = open_calls.get(shape)
        if call is None or (len(call) + 1) * shape[0] > encode_frames:
            call = open_calls[shape] = []
            calls.append(call)
        call.append(i)
    return calls


def encode_shots(codec, shots: Sequence[torch.Tensor], encode_frames: int) -> list[torch.Tensor]:
    """Latents of ``uint8 [T, h, w, 3]`` shots in their order, batched by ``encode_calls``."""
    latents: list[torch.Tensor] = [torch.empty(0)] * len(shots)
    for call in encode_calls([tuple(x.shape) for x in shots], encode_frames):
        batch = frames_to_tensor(torch.stack([shots[i] for i in call]))
        for i, z in zip(call, codec.encode_batch(batch), strict=True):
            latents[i] = z
    return latents


def encode_scene_entry(scene: SceneEntry, spec: FrameSpec, codec, text_encoder, encode_frames: int) -> dict:
    """The webdataset sample dict of one scene (see ``lct_train.data.schema``). The scene's
    shots are decoded first (uint8: 9 x 129 frames at 720p hold about 3.2 GB per worker) so that
    shots of one shape can share VAE calls."""
    shots = [shot_pixels(shot, spec, codec) for shot in scene.shots]
    sizes = [list(x.shape[:3]) for x in shots]
    latents = encode_shots(codec, shots, encode_frames)
    prompts = [scene.global_prompt] + [s.rendered_prompt for s in scene.shots]
    text, pooled = encode_prompts(text_encoder, prompts)
    meta = {
        "global_prompt": scene.global_prompt,
        "shot_prompts": prompts[1:],
        "cut": [s.cut for s in scene.shots],
        "source": scene.source,
        "fps": spec.fps,
        "frame_sizes": sizes,  # (T, H, W) per shot, in pixels
        "media": [{"path": s.path, "start": s.start, "end": s.end} for s in scene.shots],
    }
    return encode_scene(scene.key, latents, text, pooled, meta)
