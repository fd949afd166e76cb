"""Token-budget packing: several scenes in one variable-length micro-batch (design §3).

:class:`BestFitPacker` keeps a small window of scenes; a batch starts with the oldest one (no
scene waits forever) and is filled with the largest scenes that still fit ``max_tokens``.
:func:`collate` turns the chosen scenes into :class:`PackedScenes` with whole-tensor ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lct_train.data.augment import Scene
from lct_train.model.geometry import patchify
from lct_train.model.layout import SceneSpec


@dataclass
class PackedScenes:
    """One packed micro-batch (CPU tensors); the trainer builds its metadata with the model
    config's ``build_meta(specs)``."""

    keys: list[str]
    sources: list[str]
    specs: list[SceneSpec]
    video: torch.Tensor  # [Nv, patch_dim] clean latents, group order, zeros for dummy tokens
    text: torch.Tensor  # [Nt, text_dim] valid text tokens, group order
    pooled: torch.Tensor  # [G, pooled_dim], one row per group over the batch
    shot_is_image: torch.Tensor  # [num_shots] bool
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.video.shape[0] + self.text.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedScenes:
        """A copy with the tensors on ``device`` (specs, keys and stats stay host-side)."""
        moved = {n: getattr(self, n).to(device, non_blocking=non_blocking)
                 for n in ("video", "text", "pooled", "shot_is_image")}
        return PackedScenes(self.keys, self.sources, self.specs, stats=dict(self.stats), **moved)

    def pin_memory(self) -> PackedScenes:
        for name in ("video", "text", "pooled", "shot_is_image"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


def collate(scenes: list[Scene], patch, max_tokens: int) -> PackedScenes:
    """Concatenates scenes (laid out by their ``spec``) into the two streams; dummy tokens are
    zero rows."""
    if not scenes:
        raise ValueError("collate needs at least one scene")
    patch = tuple(patch)
    specs = [s.spec for s in scenes]
    channels = scenes[0].latents[0].shape[0]
    video = torch.empty(sum(g.video_len for sp in specs for g in sp.groups), channels * math.prod(patch))
    row = 0
    text, pooled, images = [], [], []
    for s, sp in zip(scenes, specs):
        dummy_rows = sp.groups[0].video_len
        video[row : row + dummy_rows].zero_()
        row += dummy_rows
        for z, g in zip(s.latents, sp.groups[1:]):
            patchify(z, patch, out=video[row : row + g.video_len])
            row += g.video_len
        text.extend(s.text)
        pooled.append(s.pooled)
        images.extend(s.shot_is_image)
    tokens = sum(s.tokens for s in scenes)
    return PackedScenes(
        keys=[s.key for s in scenes],
        sources=[s.source for s in scenes],
        specs=specs,
        video=video,
        text=torch.cat(text),
        pooled=torch.cat(pooled),
        shot_is_image=torch.tensor(images, dtype=torch.bool),
        stats={"scenes": float(len(scenes)), "tokens": float(tokens),
               "packing_efficiency": tokens / max_tokens},
    )


class BestFitPacker:
    """Chooses the scenes of the next batch from a window of ``lookahead`` scenes."""

    def __init__(self, max_tokens: int, lookahead: int):
        self.max_tokens, self.lookahead = max_tokens, lookahead
        self.window: list = []  # items with a ``.tokens`` attribute, oldest first

    @property
    def full(self) -> bool:
        return len(self.window) >= self.lookahead

    def add(self, item) -> None:
        if item.tokens > self.max_tokens:
            raise ValueError(f"scene {item.key} has {item.tokens} tokens > max_tokens {self.max_tokens}")
        self.window.append(item)

    def take(self) -> list:
        """Removes and returns the next batch (oldest scene first, then best fit)."""
        batch = [self.window.pop(0)]
        room = self.max_tokens - batch[0].tokens
        while True:
            best = -1
            for i, item in enumerate(self.window):
                if item.tokens <= room and (best < 0 or item.tokens > self.window[best].tokens):
                    best = i
            if best < 0:
                return batch
            item = self.window.pop(best)
            room -= item.tokens
            batch.append(item)
