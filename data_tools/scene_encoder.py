"""One manifest scene -> one shard sample: decode each shot, resize, encode latents and prompts."""

from __future__ import annotations

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


def shot_frames(shot, spec: FrameSpec, codec) -> torch.Tensor:
    """``float [T, 3, h, w]`` in [-1, 1], T valid for the codec, (h, w) at the target area."""
    frames = decode_shot(shot.path, spec.fps, shot.start, shot.end, spec.max_frames)
    frames = frames[: codec.valid_frames(frames.shape[0])]
    size = target_size(frames.shape[1], frames.shape[2], spec.area, spec.multiple)
    return frames_to_tensor(resize_frames(frames, size))


def encode_scene_entry(scene: SceneEntry, spec: FrameSpec, codec, text_encoder) -> dict:
    """The webdataset sample dict of one scene (see ``lct_train.data.schema``)."""
    latents, sizes = [], []
    for shot in scene.shots:
        x = shot_frames(shot, spec, codec)
        sizes.append(list(x.shape[:1]) + list(x.shape[2:]))
        latents.append(codec.encode(x))
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
