"""Bidirectional vs context-causal attention for n = 1..9 shots: time ratio against (n+1)/(2n).

The useful attention-FLOP ratio of n equal shots under the context-causal mask is (n+1)/(2n) (no
global group here, so the formula is exact). Two tables:

* **the attention kernel alone** (``attention_rows``), per kernel: ``flex`` and ``flash-varlen``
  as the model calls them (the backends' own plans: BlockMask from the key intervals, ghost
  segments), forward+backward on CUDA; achieved TFLOP/s by the project's FLOP convention
  (``lct_train.train.flops``: 4·heads·head_dim per visible query-key pair, backward = 2×
  forward). On CPU the table times *compiled* FlexAttention forward (`flex-compiled`; flex has
  no CPU backward), which shows whether the block-causal sparsity turns into time;
  `varlen-emulated` runs the ghost-segment plan with one SDPA per segment (the plan, not the
  kernel).
* **one dual-stream block, forward+backward** (``block_table``), for every backend that runs on
  the device (eager flex forward only on CPU). The block's GEMMs do not shrink, so its ratio
  lies above (n+1)/(2n).

    python bench/attention_block.py [--device cuda] [--max-shots 9] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from lct_train.model.attention import get_backend
from lct_train.model.attention.flex import _compiled_flex, block_mask_from_intervals
from lct_train.model.attention.varlen import emulate_varlen, ghost_plan, run_plan
from lct_train.model.blocks import BlockContext, DualStreamBlock
from lct_train.model.layout import AttnIntervals, GroupSpec, SceneSpec, build_packed_meta
from lct_train.model.rope import rope_cos_sin
from lct_train.train.flops import ATTN_MATMULS, MATMUL_FLOPS, TRAIN_FACTOR, attended_pairs

MASKS = ("bidirectional", "causal")
GOAL_FACTOR = 1.1  # block-causal time <= 1.1 x (n+1)/(2n) of bidirectional, n >= 2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--rope", type=int, nargs=3, default=(8, 12, 12))
    p.add_argument("--text-len", type=int, default=16)
    p.add_argument("--grid", type=int, nargs=3, default=(2, 8, 8), help="video patch grid per shot")
    p.add_argument("--max-shots", type=int, default=9)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument(
        "--kernel-grid", type=int, nargs=3, default=(2, 16, 16),
        help="video patch grid per shot of the attention-kernel table",
    )
    p.add_argument("--skip-block", action="store_true", help="only the attention-kernel table")
    return p.parse_args()


def backends_here(device: torch.device) -> list[tuple[str, bool]]:
    """(backend, with backward) pairs of the block table that run on this device."""
    if device.type == "cuda":
        return [("reference", True), ("flex", True), ("flash-varlen", True)]
    return [("reference", True), ("flex", False)]


def kernels_here(device: torch.device) -> list[tuple[str, bool]]:
    """(kernel, with backward) pairs of the attention-kernel table on this device."""
    if device.type == "cuda":
        return [("flex", True), ("flash-varlen", True)]
    return [("flex-compiled", False)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], backward: bool, warmup: int, repeats: int,
              device: torch.device) -> float:
    """Best wall time of ``fn()`` (+ backward of the sum of its outputs) over ``repeats`` runs."""
    times = []
    for i in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = fn()
            if backward:
                outs = out if isinstance(out, tuple) else (out,)
                sum(o.float().sum() for o in outs).backward()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return min(times)  # best of: robust to other load on a shared machine


def attention_call(kernel: str, intervals: AttnIntervals):
    """``fn(q, k, v) -> out`` on ``[L, H, D]`` through ``kernel`` (plan built here, once)."""
    if kernel == "flex-compiled":  # the compiled flex kernel the model uses on CUDA, on any device
        block_mask = block_mask_from_intervals(intervals)
        compiled = _compiled_flex()
        return lambda q, k, v: compiled(*(x.transpose(0, 1)[None] for x in (q, k, v)),
                                        block_mask=block_mask)[0].transpose(0, 1)
    if kernel == "varlen-emulated":
        plan = ghost_plan(intervals)
        return lambda q, k, v: run_plan(emulate_varlen, q, k, v, plan)
    backend = get_backend(kernel, intervals.lo.device, intervals.causal)
    plan = intervals.plan_for(backend)
    return lambda q, k, v: backend(q, k, v, plan)


def attention_flops(intervals: AttnIntervals, heads: int, head_dim: int, backward: bool) -> int:
    """QK^T and PV FLOPs under the mask (``lct_train.train.flops`` convention)."""
    forward = ATTN_MATMULS * MATMUL_FLOPS * heads * head_dim * attended_pairs(intervals)
    return forward * (TRAIN_FACTOR if backward else 1)


def scene_of(shots: int, text_len: int, grid: Sequence[int]) -> SceneSpec:
    """n equal shots, no global group (the (n+1)/(2n) formula is then exact)."""
    return SceneSpec(tuple(GroupSpec(text_len, tuple(grid)) for _ in range(shots)))


def attention_rows(kernels: Sequence[tuple[str, bool]], shots: Sequence[int], text_len: int,
                   grid: Sequence[int], heads: int, head_dim: int, dtype: torch.dtype,
                   device: torch.device, warmup: int, repeats: int) -> Iterator[dict]:
    """One row per (kernel, n): both masks' times, ratio, (n+1)/(2n), tile ratio, TFLOP/s."""
    for kernel, backward in kernels:
        for n in shots:
            spec = scene_of(n, text_len, grid)
            ms, tflops, tiles = {}, {}, {}
            for mask in MASKS:
                attn = build_packed_meta([spec], mask=mask).attn.to(device)
                block_mask = block_mask_from_intervals(attn)
                full = block_mask.full_kv_num_blocks
                tiles[mask] = int(block_mask.kv_num_blocks.sum()) + int(
                    0 if full is None else full.sum())
                q, k, v = (torch.randn(attn.num_q, heads, head_dim, device=device, dtype=dtype,
                                       requires_grad=backward) for _ in range(3))
                fn = attention_call(kernel, attn)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # eager flex: "called without compile"
                    seconds = best_time(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), backward,
                                        warmup, repeats, device)
                ms[mask] = 1e3 * seconds
                tflops[mask] = attention_flops(attn, heads, head_dim, backward) / seconds / 1e12
            ratio, ideal = ms["causal"] / ms["bidirectional"], (n + 1) / (2 * n)
            yield {"kernel": kernel, "pass": "fwd+bwd" if backward else "fwd", "n": n,
                   "tokens": spec.num_tokens, "bidir_ms": ms["bidirectional"],
                   "causal_ms": ms["causal"], "ratio": ratio, "ideal": ideal,
                   "ratio_over_ideal": ratio / ideal,
                   "tile_ratio": tiles["causal"] / tiles["bidirectional"],
                   "bidir_tflops": tflops["bidirectional"], "causal_tflops": tflops["causal"],
                   "goal": "-" if n < 2 else ("PASS" if ratio <= GOAL_FACTOR * ideal else "FAIL")}


def kernel_table(args, device: torch.device, dtype: torch.dtype) -> None:
    kernels = kernels_here(device)
    print(f"\nattention kernel alone, shot = {args.text_len} text + {tuple(args.kernel_grid)} "
          f"video tokens, {args.heads} heads x {args.head_dim}")
    print(f"{'kernel':<15}{'pass':<9}{'n':>3}{'tokens':>8}{'bidir ms':>11}{'causal ms':>11}"
          f"{'ratio':>8}{'tile ratio':>12}{'(n+1)/2n':>10}{'TFLOP/s b/c':>16}")
    for r in attention_rows(kernels, range(1, args.max_shots + 1), args.text_len,
                            args.kernel_grid, args.heads, args.head_dim, dtype, device,
                            args.warmup, args.repeats):
        print(f"{r['kernel']:<15}{r['pass']:<9}{r['n']:>3}{r['tokens']:>8}{r['bidir_ms']:>11.2f}"
              f"{r['causal_ms']:>11.2f}{r['ratio']:>8.3f}{r['tile_ratio']:>12.3f}"
              f"{r['ideal']:>10.3f}{r['bidir_tflops']:>8.2f}/{r['causal_tflops']:<7.2f}",
              flush=True)


def time_block(block, inputs, meta, backend_name, backward, args, device) -> float:
    cos, sin = rope_cos_sin(meta.rope_coords, meta.rope_rotate, tuple(args.rope), 256.0)
    backend = get_backend(backend_name, device, meta.attn.causal)
    ctx = BlockContext(meta, cos.to(device), sin.to(device), backend)
    meta.attn.plan_for(backend)  # built once per batch, outside the timing
    video, text, temb = inputs
    return best_time(lambda: block(video, text, temb, ctx), backward, args.warmup, args.repeats,
                     device)


def block_table(args, device: torch.device, dtype: torch.dtype, block: DualStreamBlock) -> None:
    dim = args.heads * args.head_dim
    print(
        f"{'backend':<14}{'pass':<9}{'n':>3}{'tokens':>8}{'bidir ms':>11}{'causal ms':>11}{'ratio':>8}{'(n+1)/2n':>10}"
    )
    for name, backward in backends_here(device):
        for n in range(1, args.max_shots + 1):
            spec = scene_of(n, args.text_len, args.grid)
            results = {}
            for mask in MASKS:
                meta = build_packed_meta([spec], mask=mask).to(device)
                inputs = [
                    torch.randn(rows, dim, device=device, dtype=dtype, requires_grad=backward)
                    for rows in (meta.num_video, meta.num_text, meta.num_groups)
                ]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    results[mask] = time_block(block, inputs, meta, name, backward, args, device)
            ratio = results["causal"] / results["bidirectional"]
            print(
                f"{name:<14}{'fwd+bwd' if backward else 'fwd':<9}{n:>3}{spec.num_tokens:>8}"
                f"{1e3 * results['bidirectional']:>11.2f}{1e3 * results['causal']:>11.2f}"
                f"{ratio:>8.3f}{(n + 1) / (2 * n):>10.3f}"
            )


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    dim = args.heads * args.head_dim
    torch.manual_seed(0)
    block = DualStreamBlock(dim, args.heads, 4 * dim, 1e-6, layer=0).to(device, dtype)
    print(
        f"device={device} dtype={dtype} width={dim} heads={args.heads} shot={args.text_len} text + "
        f"{args.grid} video tokens; best of {args.repeats}"
    )
    if not args.skip_block:
        block_table(args, device, dtype, block)
    kernel_table(args, device, dtype)


if __name__ == "__main__":
    main()
