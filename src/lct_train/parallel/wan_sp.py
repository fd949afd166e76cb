"""Ulysses sequence parallelism for the Wan family: a `WanMeta`'s rank-local view.

The video stream of one packed micro-batch is cut into ``sp`` contiguous chunks of
``ceil(Nv / sp)`` tokens (`ulysses.chunk_bounds`, uneven allowed). Self-attention exchanges q, k,
v through the `SequenceShard`'s all-to-all pair and runs the full-batch mask on ``H / sp`` heads,
as for the MMDiT; the text rows are not split (diffusers' Wan context-parallel plan does the
same): every rank embeds and projects all of them, and cross-attention exchanges only the
queries (`SequenceShard.attend_queries`).
"""

from __future__ import annotations

import dataclasses

from lct_train.model.wan.layout import WanMeta
from lct_train.parallel.ulysses import SequenceShard, SPGroup, chunk_bounds


def shard_wan_meta(meta: WanMeta, sp: SPGroup) -> WanMeta:
    """The rank-local view of ``meta``: per-token fields of this rank's video chunk."""
    if meta.shard is not None:
        raise ValueError("shard_wan_meta: meta is already sharded")
    bounds = chunk_bounds(meta.num_video, sp.size)
    shard = SequenceShard(sp, [e - s for s, e in bounds], [0] * sp.size)
    v0, v1 = shard.video
    return dataclasses.replace(
        meta,
        num_video=v1 - v0,
        video_group=meta.video_group[v0:v1],
        rope_coords=meta.rope_coords[v0:v1],
        video_shot=meta.video_shot[v0:v1],
        shard=shard,
    )
