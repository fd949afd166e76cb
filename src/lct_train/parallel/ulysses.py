"""Ulysses sequence parallelism (``parallel.sp_degree``): one packed micro-batch on an SP group.

Layout. The joint sequence ``[T_G D_G T_1 V_1 ...]`` of ``L`` tokens is cut into ``sp``
contiguous chunks of ``ceil(L / sp)`` tokens (the last rank's chunk is shorter when ``sp`` does
not divide ``L``; no padding rows exist anywhere, the all-to-all takes per-rank split sizes).
Because joint order keeps each stream's order, a rank's chunk holds a contiguous range of the
text stream and of the video stream: per-modality weights apply to those, per-group modulation is
expanded by the chunk's group indices, RoPE uses the chunk's coordinates. `shard_meta` builds
that rank-local view of a `PackedMeta` (host arithmetic plus slices of the device tensors, no
sync); `attn` / `text_attn` and every per-group / per-shot field stay those of the full batch.

Attention. Around every attention (dual-stream, single-stream, token refiner) q, k, v go through
one all-to-all, stacked ``[n, 3, H, Dh]``: sequence-sharded, all heads -> full sequence, heads
``[j H / sp, (j + 1) H / sp)`` on SP rank j. The unchanged backend runs the full-sequence mask
(its plan is built once per micro-batch, identical on every SP rank) on ``H / sp`` heads; one
all-to-all returns the output to the sequence layout. A KV cache then holds this rank's heads
of every history token. Backward of an all-to-all is the reverse all-to-all.

Bytes moved per attention layer and rank (forward): q, k, v out and the output back,
``4 * (L / sp) * H * Dh * bytes * (sp - 1) / sp``; backward moves the same again (the gradients
of both), activation checkpointing re-runs the forward ones (``bench/sp_comm.py`` tabulates it).
The refiner's attention moves ``4 * Nt_rank * ...`` on the text stream only. The group means of
the refiner's input text are one all-reduce of ``[G, text_dim]`` per forward.

Context parallelism beyond ``num_heads`` ranks (ring attention) would replace the all-to-all
pair in `SequenceShard.attend` by a ring over K/V blocks with the same per-rank chunks; nothing
outside this module and the backend plans would change.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lct_train.model.layout import PackedMeta


@dataclass(frozen=True)
class SPGroup:
    """This rank's place in its sequence-parallel group (``group`` spans ``size`` ranks)."""

    group: dist.ProcessGroup
    rank: int
    size: int


def all_to_all(x: torch.Tensor, group, send: list[int], recv: list[int]) -> torch.Tensor:
    """``x`` split along dim 0 into ``send`` rows per rank; returns the ``recv`` rows gathered."""
    out = x.new_empty((sum(recv), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), output_split_sizes=recv,
                           input_split_sizes=send, group=group)
    return out


def _seq_to_heads(x: torch.Tensor, sp: SPGroup, counts: list[int]) -> torch.Tensor:
    """``[n, C, H, D]`` (this rank's rows) -> ``[sum(counts), C, H / sp, D]`` (all rows)."""
    n, c, h, d = x.shape
    blocks = x.reshape(n, c, sp.size, h // sp.size, d).movedim(2, 0)  # [sp, n, C, h, D]
    return all_to_all(blocks.reshape(sp.size * n, c, h // sp.size, d), sp.group,
                      [n] * sp.size, counts)


def _heads_to_seq(y: torch.Tensor, sp: SPGroup, counts: list[int]) -> torch.Tensor:
    """Inverse of `_seq_to_heads`: ``[sum(counts), C, h, D]`` -> ``[counts[rank], C, h * sp, D]``."""
    _, c, h, d = y.shape
    n = counts[sp.rank]
    blocks = all_to_all(y, sp.group, counts, [n] * sp.size)  # [sp * n, C, h, D]
    return blocks.reshape(sp.size, n, c, h, d).movedim(0, 2).reshape(n, c, sp.size * h, d)


class _Exchange(torch.autograd.Function):
    """`_seq_to_heads` (``to_heads``) or `_heads_to_seq`; the backward is the other one."""

    @staticmethod
    def forward(ctx, x, sp, counts, to_heads: bool):
        ctx.sp, ctx.counts, ctx.to_heads = sp, counts, to_heads
        return (_seq_to_heads if to_heads else _heads_to_seq)(x, sp, counts)

    @staticmethod
    def backward(ctx, grad):
        reverse = _heads_to_seq if ctx.to_heads else _seq_to_heads
        return reverse(grad, ctx.sp, ctx.counts), None, None, None


class SequenceShard:
    """One rank's slice of one packed micro-batch (``PackedMeta.shard`` of the local view).

    A plain class (see ``BlockContext``): FSDP's input walk must not rebuild it. Ranges are host
    ints: ``joint`` / ``text`` / ``video`` are this rank's ``[start, end)`` in each sequence;
    ``joint_counts`` / ``text_counts`` the chunk sizes of every SP rank (all-to-all splits).
    """

    __slots__ = ("joint", "joint_counts", "sp", "text", "text_counts", "video", "video_counts")

    def __init__(self, sp: SPGroup, joint_counts: list[int], text_counts: list[int]):
        self.sp = sp
        self.joint_counts, self.text_counts = joint_counts, text_counts
        self.video_counts = [j - t for j, t in zip(joint_counts, text_counts)]
        self.joint = _range(joint_counts, sp.rank)
        self.text = _range(text_counts, sp.rank)
        self.video = _range(self.video_counts, sp.rank)

    def attend(self, attend_fn, q, k, v, *, text: bool = False) -> torch.Tensor:
        """``attend_fn(q, k, v)`` on the full sequence for this rank's heads; ``q, k, v`` are this
        rank's rows ``[n, H, D]``, the result too. One all-to-all each way. (``H`` divisible
        by the SP size: checked once, by the config and by ``lct-sample --sp``.)"""
        counts = self.text_counts if text else self.joint_counts
        full = _Exchange.apply(torch.stack([q, k, v], dim=1), self.sp, counts, True)
        out = attend_fn(*full.unbind(1))
        return _Exchange.apply(out.unsqueeze(1), self.sp, counts, False).squeeze(1)

    def attend_queries(self, attend_fn, q, k, v) -> torch.Tensor:
        """``attend_fn(q, k, v)`` for this rank's heads, with only the queries sharded: ``q`` is
        this rank's rows ``[n, H, D]`` of the split sequence, ``k, v`` are replicated on every
        rank (Wan's cross-attention to the prompt windows) and sliced to this rank's heads. One
        all-to-all each way; the gradient of a replicated ``k, v`` reaches this rank's heads
        only, so the SP ranks' gradients sum to the full one (as FSDP's reduction does)."""
        counts = self.joint_counts
        heads = q.shape[1] // self.sp.size
        own = slice(self.sp.rank * heads, (self.sp.rank + 1) * heads)
        full_q = _Exchange.apply(q.unsqueeze(1), self.sp, counts, True).squeeze(1)
        out = attend_fn(full_q, k[:, own], v[:, own])
        return _Exchange.apply(out.unsqueeze(1), self.sp, counts, False).squeeze(1)

    def sum_groups(self, sums: torch.Tensor) -> torch.Tensor:
        """Per-group sums of this rank's rows -> sums over the whole batch (input data only)."""
        if sums.requires_grad:
            raise RuntimeError("SequenceShard.sum_groups: for inputs without gradients")
        dist.all_reduce(sums, group=self.sp.group)
        return sums

    def local_video(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a full video-stream tensor ``[Nv, ...]``."""
        return x[self.video[0]:self.video[1]]

    def local_text(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.text[0]:self.text[1]]

    def gather_video(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's video rows -> the full ``[Nv, ...]`` on every rank (no gradient)."""
        width = max(self.video_counts)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.sp.size)]
        dist.all_gather(parts, padded, group=self.sp.group)
        return torch.cat([p[:n] for p, n in zip(parts, self.video_counts)])


def _range(counts: list[int], rank: int) -> tuple[int, int]:
    start = sum(counts[:rank])
    return start, start + counts[rank]


def chunk_bounds(num_tokens: int, sp_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` of every SP rank: ``ceil(L / sp)`` tokens each, the last
    ones shorter (possibly empty)."""
    chunk = math.ceil(num_tokens / sp_size)
    return [(min(r * chunk, num_tokens), min((r + 1) * chunk, num_tokens)) for r in range(sp_size)]


def text_before(meta: PackedMeta, position: int) -> int:
    """How many text tokens precede joint position ``position`` (host ints only)."""
    joint = text = 0
    for lt, lv in zip(meta.group_text_len, meta.group_video_len):
        if position <= joint + lt:
            return text + max(0, position - joint)
        joint, text = joint + lt + lv, text + lt
        if position <= joint:
            return text
    return text


def shard_meta(meta: PackedMeta, sp: SPGroup) -> PackedMeta:
    """The rank-local view of ``meta`` (module docstring): per-token fields cover this rank's
    chunk, ``shard`` says which; identical full-batch fields (and memoised plans) are shared."""
    if meta.shard is not None:
        raise ValueError("shard_meta: meta is already sharded")
    bounds = chunk_bounds(meta.num_joint, sp.size)
    text_at = [(text_before(meta, s), text_before(meta, e)) for s, e in bounds]
    shard = SequenceShard(sp, [e - s for s, e in bounds], [t1 - t0 for t0, t1 in text_at])
    (j0, j1), (t0, t1), (v0, v1) = shard.joint, shard.text, shard.video
    streams = meta.joint_from_streams[j0:j1]
    is_text = streams < meta.num_text
    local_streams = torch.where(is_text, streams - t0, streams - meta.num_text - v0 + (t1 - t0))
    return dataclasses.replace(
        meta,
        num_text=t1 - t0,
        num_video=v1 - v0,
        text_group=meta.text_group[t0:t1],
        video_group=meta.video_group[v0:v1],
        joint_group=meta.joint_group[j0:j1],
        joint_from_streams=local_streams,
        text_to_joint=meta.text_to_joint[t0:t1] - j0,
        video_to_joint=meta.video_to_joint[v0:v1] - j0,
        rope_coords=meta.rope_coords[j0:j1],
        rope_rotate=meta.rope_rotate[j0:j1],
        video_shot=meta.video_shot[v0:v1],
        shard=shard,
    )
