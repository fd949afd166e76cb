"""Encode time and peak memory of the HunyuanVideo VAE with and without diffusers' tiling (CPU).

    python bench/vae_tiling.py [--size 5,192,192] [--tile 128] [--stride 96] [--width 1.0]

The VAE has HunyuanVideo's architecture (``AutoencoderKLHunyuanVideo()``'s defaults: 128-512
channels, 16 latent channels; ``--width`` scales the channels) with random weights: time and
memory do not depend on the weights. ``--size`` is one shot F,H,W in pixels; the tiles are
``--tile`` pixels with ``--stride`` (diffusers' defaults 256/192 are for 480p and above: at a small
CPU size the same ratio shows the effect). Each case runs in a fresh process, so its peak
resident memory (``ru_maxrss``) is its own; wall and CPU seconds are printed (on a shared
machine the CPU seconds are the steadier figure); the memory figure printed is the peak above the process's
memory after the VAE is built, i.e. the activations of the encode. Also printed: how far the
tiled latents are from the untiled ones (random weights: not a quality figure).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

KIB = 1024
BLOCK_CHANNELS = (128, 256, 512, 512)  # AutoencoderKLHunyuanVideo's defaults


def _case(args, tiled: bool, queue) -> None:
    from diffusers import AutoencoderKLHunyuanVideo

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = tuple(max(32, int(c * args.width) // 32 * 32) for c in BLOCK_CHANNELS)
    vae = AutoencoderKLHunyuanVideo(block_out_channels=channels).eval()
    if tiled:
        vae.enable_tiling(tile_sample_min_height=args.tile, tile_sample_min_width=args.tile,
                          tile_sample_stride_height=args.stride, tile_sample_stride_width=args.stride)
    frames, height, width = args.size
    x = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # plain bytes: the process ends next
    queue.put((seconds, cpu_seconds, (peak - base) / KIB, z.numpy()))


def run(args, tiled: bool):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(args, tiled, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="5,192,192", type=lambda s: tuple(int(v) for v in s.split(",")),
                   help="shot frames,height,width in pixels")
    p.add_argument("--tile", type=int, default=128, help="tile size in pixels (diffusers: 256)")
    p.add_argument("--stride", type=int, default=96, help="tile stride in pixels (diffusers: 192)")
    p.add_argument("--width", type=float, default=1.0, help="channel scale of the VAE")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    print(f"HunyuanVideo VAE encode, CPU, fp32, {args.threads} thread(s), shot "
          f"{args.size[0]}x{args.size[1]}x{args.size[2]}, width x{args.width}")
    results = {}
    for tiled in (False, True):
        seconds, cpu_seconds, peak_mb, _ = results[tiled] = run(args, tiled)
        name = f"tiled {args.tile}/{args.stride}" if tiled else "untiled"
        print(f"{name:>16}: encode {seconds:7.2f} s wall, {cpu_seconds:7.2f} s CPU   peak memory "
              f"above the model {peak_mb:8.1f} MB")
    untiled, tiled = results[False], results[True]
    print(f"tiled / untiled: CPU time x{tiled[1] / untiled[1]:.2f}, memory x{tiled[2] / untiled[2]:.2f}; "
          f"latents max |diff| {abs(tiled[3] - untiled[3]).max():.3g} "
          f"(max |latent| {abs(untiled[3]).max():.3g})")


if __name__ == "__main__":
    main()
