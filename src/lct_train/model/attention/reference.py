"""`reference` backend: a dense boolean mask per scene + ``scaled_dot_product_attention``.

Runs anywhere, forward and backward; it is the truth the other backends are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lct_train.model.layout import AttnIntervals


@dataclass
class DenseScene:
    q0: int
    q1: int
    k0: int
    k1: int
    mask: torch.Tensor | None  # [q1-q0, k1-k0] bool; None = the scene is fully visible


def interval_mask(lo: torch.Tensor, hi: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """Rows ``[lo, hi)`` over keys ``k0..k1-1`` as a dense bool matrix."""
    keys = torch.arange(k0, k1, device=lo.device, dtype=lo.dtype)
    return (keys[None, :] >= lo[:, None]) & (keys[None, :] < hi[:, None])


def dense_mask(intervals: AttnIntervals, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor:
    """Rows ``q0..q1-1`` over keys ``k0..k1-1``: the first interval, or-ed with the second."""
    mask = interval_mask(intervals.lo[q0:q1], intervals.hi[q0:q1], k0, k1)
    if intervals.lo2 is not None:
        mask |= interval_mask(intervals.lo2[q0:q1], intervals.hi2[q0:q1], k0, k1)
    return mask


class ReferenceAttention:
    name = "reference"

    def plan(self, intervals: AttnIntervals) -> list[DenseScene]:
        scenes = []
        for (q0, q1, k0, k1), full in zip(intervals.scenes, intervals.scene_full):
            if q1 > q0:
                mask = None if full else dense_mask(intervals, q0, q1, k0, k1)
                scenes.append(DenseScene(q0, q1, k0, k1, mask))
        return scenes

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: list[DenseScene]
    ) -> torch.Tensor:
        """``q [Lq, H, D]``, ``k, v [Lk, H, D]`` -> ``[Lq, H, D]``."""
        outs = []
        for s in plan:
            qs, ks, vs = (
                x.transpose(0, 1)[None] for x in (q[s.q0 : s.q1], k[s.k0 : s.k1], v[s.k0 : s.k1])
            )
            outs.append(
                F.scaled_dot_product_attention(qs, ks, vs, attn_mask=s.mask)[0].transpose(0, 1)
            )
        if not outs:
            return q.new_zeros(q.shape)
        return torch.cat(outs) if len(outs) > 1 else outs[0]
