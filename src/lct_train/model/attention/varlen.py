"""`flash-varlen` backend: flash-attn's ``flash_attn_varlen_func`` if installed, else torch's
``varlen_attn`` (CUDA only).

Bidirectional batches are one call with ``cu_seqlens`` = scene bounds. Context-causal batches use
the exact *ghost-segment* plan: call j takes the j-th query run (group) of every scene, with keys
``[scene_start, end_of_group_j)`` of the *original* packed K/V; the key gaps between active segments
are filled with zero-query "ghost" segments so that ``cu_seqlens_k`` tiles K. Masked tiles are never
computed, K/V are never copied, and autograd sums dK/dV over the calls. `emulate_varlen` runs a plan
with one SDPA per segment, so the plan itself is tested on CPU.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake

from lct_train.model.layout import INTERVAL_DTYPE, AttnIntervals
from lct_train.model.transfer import to_device

VARLEN_POSITIONAL = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k")


@dataclass
class VarlenCall:
    q_start: int  # rows [q_start, q_end) of the permuted queries
    q_end: int
    cu_seqlens_q: torch.Tensor  # int32, ghost segments have length 0
    cu_seqlens_k: torch.Tensor  # int32, tiles [0, Lk)
    max_seqlen_q: int
    max_seqlen_k: int  # includes ghost segments (the FA2 backward grid covers max_seqlen_k)


@dataclass
class VarlenPlan:
    calls: list[VarlenCall]
    perm: torch.Tensor | None  # query rows in call order (None: identity)
    inv_perm: torch.Tensor | None


def ghost_plan(intervals: AttnIntervals) -> VarlenPlan:
    """Splits the runs into calls whose key ranges are disjoint and increasing (one run per scene)."""
    if intervals.lo2 is not None:
        raise ValueError("flash-varlen: the isolated mask (two key intervals per row) has no "
                         "ghost-segment plan; use attn_backend='flex' or 'reference'")
    per_call: list[list[tuple[int, int, int, int]]] = []
    for q0, q1, _, _ in intervals.scenes:
        scene_runs = [r for r in intervals.runs if q0 <= r[0] and r[1] <= q1]
        for j, run in enumerate(scene_runs):
            if j == len(per_call):
                per_call.append([])
            per_call[j].append(run)
    calls, order, row = [], [], 0
    for runs in per_call:
        q_lens, k_bounds, cursor = [], [0], 0
        for q0, q1, lo, hi in runs:
            if lo > cursor:  # ghost segment over the key gap
                q_lens.append(0)
                k_bounds.append(lo)
            q_lens.append(q1 - q0)
            k_bounds.append(hi)
            cursor = hi
            order.append(torch.arange(q0, q1))
        if cursor < intervals.num_k:
            q_lens.append(0)
            k_bounds.append(intervals.num_k)
        cu_q = torch.tensor([0, *q_lens], dtype=torch.long).cumsum(0)
        cu_k = torch.tensor(k_bounds, dtype=torch.long)
        calls.append(
            VarlenCall(
                row,
                row + int(cu_q[-1]),
                cu_q.to(INTERVAL_DTYPE),
                cu_k.to(INTERVAL_DTYPE),
                max(q_lens),
                int((cu_k[1:] - cu_k[:-1]).max()),
            )
        )
        row += int(cu_q[-1])
    perm = torch.cat(order) if order else torch.zeros(0, dtype=torch.long)
    # Built on the host from host ints; moved to the intervals' device in one copy.
    host = [t for c in calls for t in (c.cu_seqlens_q, c.cu_seqlens_k)]
    identity = torch.equal(perm, torch.arange(intervals.num_q))
    if not identity:
        host += [perm, torch.argsort(perm)]
    moved = to_device(host, intervals.lo.device)
    for i, c in enumerate(calls):
        c.cu_seqlens_q, c.cu_seqlens_k = moved[2 * i], moved[2 * i + 1]
    if identity:
        return VarlenPlan(calls, None, None)
    return VarlenPlan(calls, moved[-2], moved[-1])


def run_plan(
    kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: VarlenPlan
) -> torch.Tensor:
    """``kernel(q, k, v, cu_q, cu_k, max_q, max_k)`` per call; queries permuted into call order."""
    qp = q if plan.perm is None else q.index_select(0, plan.perm)
    outs = [
        kernel(
            qp[c.q_start : c.q_end],
            k,
            v,
            c.cu_seqlens_q,
            c.cu_seqlens_k,
            c.max_seqlen_q,
            c.max_seqlen_k,
        )
        for c in plan.calls
    ]
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return out if plan.inv_perm is None else out.index_select(0, plan.inv_perm)


def emulate_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> torch.Tensor:
    """What a flash varlen kernel computes, one SDPA per (non-empty) segment; CPU-testable."""
    outs = []
    for q0, q1, k0, k1 in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist(),
                              cu_seqlens_k[:-1].tolist(), cu_seqlens_k[1:].tolist()):  # fmt: skip
        if q1 > q0:
            qs, ks, vs = (x.transpose(0, 1)[None] for x in (q[q0:q1], k[k0:k1], v[k0:k1]))
            outs.append(F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1))
    return torch.cat(outs)


@functools.cache
def varlen_kernel():
    """flash-attn's ``flash_attn_varlen_func`` when installed, else torch's ``varlen_attn``."""
    try:
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func
    except ImportError:
        return torch_varlen_kernel()


@functools.cache
def torch_varlen_kernel():
    """torch's ``varlen_attn`` (flash-attention inside; it has a fake kernel, so memory
    estimates on fake tensors see flash's O(L) footprint)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as err:
        raise RuntimeError(
            "flash-varlen: neither flash-attn nor torch.nn.attention.varlen is available"
        ) from err
    params = [
        p
        for p in inspect.signature(varlen_attn).parameters.values()
        if p.kind == p.POSITIONAL_OR_KEYWORD
    ]
    if len(params) < len(VARLEN_POSITIONAL):
        raise RuntimeError(
            f"flash-varlen: torch varlen_attn{inspect.signature(varlen_attn)} is not supported"
        )
    return varlen_attn


class VarlenAttention:
    name = "flash-varlen"

    def plan(self, intervals: AttnIntervals) -> VarlenPlan:
        return ghost_plan(intervals)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: VarlenPlan
    ) -> torch.Tensor:
        # Fake tensors (``lct-estimate``) run torch's kernel's fake implementation on any device.
        fake = is_fake(q)
        if q.device.type != "cuda" and not fake:
            raise RuntimeError(
                "flash-varlen needs a CUDA device; use attn_backend='reference' on CPU"
            )
        return run_plan(torch_varlen_kernel() if fake else varlen_kernel(), q, k, v, plan)
