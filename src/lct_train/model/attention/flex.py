"""`flex` backend: FlexAttention with a block-sparse `BlockMask` built analytically from the
per-row key intervals (one run per scene or group, so O(runs x q-blocks x k-blocks) work).

Compiled (``dynamic=True``) on CUDA; on CPU it runs eager, forward only (torch raises on backward).
"""

from __future__ import annotations

import functools

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from lct_train.model.layout import AttnIntervals
from lct_train.model.transfer import to_device

BLOCK_SIZE = 128  # flex's tile on Hopper


def interval_mask_mod(lo: torch.Tensor, hi: torch.Tensor, lo2: torch.Tensor | None = None,
                      hi2: torch.Tensor | None = None):
    """Row q sees keys ``[lo[q], hi[q])`` (or ``[lo2[q], hi2[q])``): loads indexed by ``q_idx``."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx >= lo[q_idx]) & (kv_idx < hi[q_idx])

    def two_intervals(b, h, q_idx, kv_idx):
        return mask_mod(b, h, q_idx, kv_idx) | ((kv_idx >= lo2[q_idx]) & (kv_idx < hi2[q_idx]))

    return mask_mod if lo2 is None else two_intervals


def _overlap(starts: torch.Tensor, ends: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """``[R, nblocks]``: how many of each run's ``[start, end)`` fall into each block."""
    block_start = torch.arange(0, length, size, dtype=torch.long)
    block_end = (block_start + size).clamp(max=length)
    return (
        torch.minimum(ends[:, None], block_end) - torch.maximum(starts[:, None], block_start)
    ).clamp(min=0)


def block_mask_from_intervals(intervals: AttnIntervals, block_size: int = BLOCK_SIZE) -> BlockMask:
    """The exact `BlockMask` of the interval mask: full tiles skip the mask_mod, empty ones are skipped.

    A row in two runs (isolated mask) has disjoint key ranges in them, so the counts add up."""
    runs = torch.tensor(intervals.runs, dtype=torch.long).reshape(-1, 4)
    rows = _overlap(runs[:, 0], runs[:, 1], block_size, intervals.num_q)  # [R, nq]
    keys = _overlap(runs[:, 2], runs[:, 3], block_size, intervals.num_k)  # [R, nk]
    visible = rows.T @ keys  # [nq, nk] visible (q, k) pairs per tile
    full = (
        visible == block_size * block_size
    )  # a ragged last tile stays partial, as create_block_mask
    partial = (visible > 0) & ~full

    def as_indices(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = selected.sum(-1, dtype=torch.int32)
        order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return count[None, None], order[None, None]

    # Built on the host from the runs; moved to the intervals' device in one copy.
    kv_num, kv_idx, full_num, full_idx = to_device([*as_indices(partial), *as_indices(full)],
                                                   intervals.lo.device)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=interval_mask_mod(intervals.lo, intervals.hi, intervals.lo2, intervals.hi2),
        seq_lengths=(intervals.num_q, intervals.num_k),
    )  # fmt: skip


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=True)


class FlexAttention:
    name = "flex"

    def __init__(self, block_size: int = BLOCK_SIZE):
        self.block_size = block_size

    def plan(self, intervals: AttnIntervals) -> BlockMask:
        return block_mask_from_intervals(intervals, self.block_size)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: BlockMask
    ) -> torch.Tensor:
        """``q [Lq, H, D]``, ``k, v [Lk, H, D]`` -> ``[Lq, H, D]``."""
        if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
            raise NotImplementedError(
                "flex attention has no backward on CPU; use attn_backend='reference'"
            )
        kernel = _compiled_flex() if q.device.type == "cuda" else flex_attention
        qs, ks, vs = (x.transpose(0, 1)[None] for x in (q, k, v))
        return kernel(qs, ks, vs, block_mask=plan)[0].transpose(0, 1)
