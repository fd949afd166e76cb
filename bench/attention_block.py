"""One dual-stream block, forward+backward: bidirectional vs context-causal for n = 1..9 shots.

For every attention backend that runs here it prints the time of both masks, their ratio, and the
useful attention-FLOP ratio (n+1)/(2n) of n equal shots (no global group, so the formula is exact
for the attention part; the block's GEMMs do not shrink, so the block ratio lies above it).
On CPU, `flex` has no backward: it is timed forward only (eager, unfused) and marked so.

A second table times the attention kernel alone with *compiled* FlexAttention (block-sparse
BlockMask built from the intervals): forward on CPU, forward+backward on CUDA. This is the number
that shows whether the block-causal sparsity turns into time.

    python bench/attention_block.py [--device cuda] [--max-shots 9] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch.nn.attention.flex_attention import flex_attention

from lct_train.model.attention import get_backend
from lct_train.model.attention.flex import block_mask_from_intervals
from lct_train.model.blocks import BlockContext, DualStreamBlock
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.model.rope import rope_cos_sin


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
        help="video patch grid per shot of the compiled-flex kernel table",
    )
    p.add_argument("--skip-block", action="store_true", help="only the compiled-flex kernel table")
    return p.parse_args()


def backends_here(device: torch.device) -> list[tuple[str, bool]]:
    """(backend, with backward) pairs that run on this device."""
    if device.type == "cuda":
        return [("reference", True), ("flex", True), ("flash-varlen", True)]
    return [("reference", True), ("flex", False)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(block, inputs, meta, backend_name, backward, args, device) -> float:
    cos, sin = rope_cos_sin(meta.rope_coords, meta.rope_rotate, tuple(args.rope), 256.0)
    backend = get_backend(backend_name, device, meta.attn.causal)
    ctx = BlockContext(meta, cos.to(device), sin.to(device), backend)
    meta.attn.plan_for(backend)  # built once per batch, outside the timing
    video, text, temb = inputs
    times = []
    for i in range(args.warmup + args.repeats):
        sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out_v, out_t = block(video, text, temb, ctx)
            if backward:
                (out_v.sum() + out_t.sum()).backward()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return min(times)  # best of: robust to other load on a shared machine


def time_flex_kernel(q, k, v, block_mask, backward, args, device) -> float:
    kernel = torch.compile(flex_attention, dynamic=True)
    times = []
    for i in range(args.warmup + args.repeats):
        sync(device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = kernel(q, k, v, block_mask=block_mask)
            if backward:
                out.sum().backward()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return min(times)


def kernel_table(args, device: torch.device, dtype: torch.dtype) -> None:
    """Compiled FlexAttention alone: bidirectional vs block-causal BlockMasks of one scene."""
    backward = device.type == "cuda"
    print(f"\ncompiled flex_attention alone ({'fwd+bwd' if backward else 'fwd'}), shot = "
          f"{args.text_len} text + {tuple(args.kernel_grid)} video tokens")
    print(f"{'n':>3}{'tokens':>8}{'bidir ms':>11}{'causal ms':>11}{'ratio':>8}"
          f"{'tile ratio':>12}{'(n+1)/2n':>10}")
    for n in range(1, args.max_shots + 1):
        spec = SceneSpec(tuple(GroupSpec(args.text_len, tuple(args.kernel_grid))
                               for _ in range(n)))
        results, tiles = {}, {}
        for mask in ("bidirectional", "causal"):
            meta = build_packed_meta([spec], mask=mask).to(device)
            block_mask = block_mask_from_intervals(meta.attn)
            tiles[mask] = int(block_mask.kv_num_blocks.sum()) + int(
                block_mask.full_kv_num_blocks.sum() if block_mask.full_kv_num_blocks is not None
                else 0)
            q, k, v = (torch.randn(1, args.heads, meta.num_joint, args.head_dim, device=device,
                                   dtype=dtype, requires_grad=backward) for _ in range(3))
            results[mask] = time_flex_kernel(q, k, v, block_mask, backward, args, device)
        print(f"{n:>3}{spec.num_tokens:>8}{1e3 * results['bidirectional']:>11.2f}"
              f"{1e3 * results['causal']:>11.2f}"
              f"{results['causal'] / results['bidirectional']:>8.3f}"
              f"{tiles['causal'] / tiles['bidirectional']:>12.3f}{(n + 1) / (2 * n):>10.3f}")


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


def block_table(args, device: torch.device, dtype: torch.dtype, block: DualStreamBlock) -> None:
    dim = args.heads * args.head_dim
    print(
        f"{'backend':<14}{'pass':<9}{'n':>3}{'tokens':>8}{'bidir ms':>11}{'causal ms':>11}{'ratio':>8}{'(n+1)/2n':>10}"
    )
    for name, backward in backends_here(device):
        for n in range(1, args.max_shots + 1):
            spec = SceneSpec(tuple(GroupSpec(args.text_len, tuple(args.grid)) for _ in range(n)))
            results = {}
            for mask in ("bidirectional", "causal"):
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


if __name__ == "__main__":
    main()
