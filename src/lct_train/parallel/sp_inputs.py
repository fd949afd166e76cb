"""A packed batch as one sequence-parallel rank's forward takes it, for every model family.

``local_inputs`` is the one place that knows how each family's metadata is sharded: the MMDiT
cuts its joint text+video stream (`ulysses.shard_meta`), Wan cuts the video stream and keeps the
text whole (`wan_sp.shard_wan_meta`). Training, validation and sampling step through here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lct_train.model.layout import PackedMeta
from lct_train.model.wan.layout import WanMeta
from lct_train.parallel.ulysses import SPGroup, shard_meta
from lct_train.parallel.wan_sp import shard_wan_meta


def shard_for(meta: PackedMeta | WanMeta, sp: SPGroup) -> PackedMeta | WanMeta:
    """The rank-local view of ``meta`` (its family's sharding)."""
    if isinstance(meta, WanMeta):
        return shard_wan_meta(meta, sp)
    return shard_meta(meta, sp)


def local_inputs(meta: PackedMeta | WanMeta, sp: SPGroup | None, videos: Sequence[torch.Tensor],
                 text: torch.Tensor) -> tuple[PackedMeta | WanMeta, list[torch.Tensor], torch.Tensor]:
    """``(meta, videos, text)`` as this rank's forward takes them: unchanged without sequence
    parallelism, else the rank-local meta and this rank's slices (Wan: the text stays whole)."""
    if sp is None:
        return meta, list(videos), text
    local = shard_for(meta, sp)
    local_text = text if isinstance(meta, WanMeta) else local.shard.local_text(text)
    return local, [local.shard.local_video(v) for v in videos], local_text
