"""Attention over packed scenes: one interface, several backends (SPEC §4).

A backend is an object with ``name``, ``plan(intervals)`` (its kernel
metadata, built once per batch and memoised on the `AttnIntervals`) and
``__call__(q, k, v, plan) -> out`` on ``[L, H, D]`` tensors. `get_backend` picks one by name;
``"auto"`` picks by device and mask: on CUDA `flash-varlen` for bidirectional and `flex` for
context-causal and isolated batches, on CPU `reference`.
"""

from __future__ import annotations

import torch

from lct_train.model.attention.kv_cache import KVCache
from lct_train.model.attention.reference import ReferenceAttention
from lct_train.model.layout import AttnIntervals

__all__ = ["KVCache", "attend", "get_backend"]


def get_backend(name: str, device: torch.device, causal: bool):
    """Resolves a backend name (``auto``, ``reference``, ``flex``, ``flash-varlen``).

    ``causal``: any mask other than scene-wide bidirectional (auto then picks ``flex``)."""
    if name == "auto":
        if device.type != "cuda":
            name = "reference"
        else:
            name = "flex" if causal else "flash-varlen"
    if name == "reference":
        return ReferenceAttention()
    if name == "flex":
        from lct_train.model.attention.flex import FlexAttention

        return FlexAttention()
    if name == "flash-varlen":
        from lct_train.model.attention.varlen import VarlenAttention

        return VarlenAttention()
    raise ValueError(f"attention backend {name!r} is unknown")


def attend(
    backend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, intervals: AttnIntervals
) -> torch.Tensor:
    """``q [Lq, H, D]`` against ``k, v [Lk, H, D]`` under the mask ``intervals``. The row counts
    are checked in eager mode only: under torch.compile the comparison would add guards on the
    mask's host ints (the compiled run is the eager one's code, checked there and by the
    tests)."""
    if not torch.compiler.is_compiling() and (
        q.shape[0] != intervals.num_q or k.shape[0] != intervals.num_k
    ):
        raise ValueError(
            f"attention: q has {q.shape[0]} rows and k {k.shape[0]}, but the mask expects "
            f"{intervals.num_q} queries and {intervals.num_k} keys"
        )
    return backend(q, k, v, intervals.plan_for(backend))
