"""Ulysses all-to-all traffic against ``parallel.sp_degree`` (computed, not timed).

For a packed micro-batch (default: one paper-scale scene, 9 shots of 31 latent frames x 30 x 30
patches = a 5 s, 24 fps shot at 480 x 480 through a 4x8x8 VAE and a 1x2x2 patch, plus a global
group and ``--text-len`` text tokens per group) it prints, per SP rank:

* bytes one attention layer sends in the forward (q, k, v in one all-to-all, the output back):
  ``4 * ceil(L / sp) * H * Dh * bytes * (sp - 1) / sp`` (the share that stays on the rank is
  not sent); the token refiner's layers the same on the text stream;
* bytes per training step and micro-batch: forward + backward (the same again) + the forward
  re-run of activation checkpointing (``--ac full``, the memory presets' setting);
* attention FLOPs per rank and layer (forward, ``4 L^2 H Dh / sp``, full mask) per byte sent:
  how far the all-to-all is from the attention it feeds.

    python bench/sp_comm.py [--models lct-3b hunyuan-video] [--sp 1 2 4 8] [--shots 9]
        [--grid 31 30 30] [--text-len 256] [--dtype-bytes 2] [--ac full|none]

Link speeds are not assumed: multiply by your fabric's all-to-all bandwidth.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lct_train.model.config import ModelConfig
from lct_train.model.layout import GroupSpec, SceneSpec

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lct-3b", "hunyuan-video"])
    p.add_argument("--sp", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--shots", type=int, default=9)
    p.add_argument("--grid", type=int, nargs=3, default=(31, 30, 30),
                   help="latent patch grid (F, H, W) per shot")
    p.add_argument("--text-len", type=int, default=256, help="text tokens per group")
    p.add_argument("--dtype-bytes", type=int, default=2, help="2 = bf16 activations")
    p.add_argument("--ac", choices=("full", "none"), default="full")
    return p.parse_args()


def scene(cfg: ModelConfig, shots: int, grid: tuple[int, int, int], text_len: int) -> SceneSpec:
    groups = [GroupSpec(text_len, cfg.dummy_grid, is_global=True)]
    return SceneSpec(tuple(groups + [GroupSpec(text_len, grid) for _ in range(shots)]))


def layer_bytes(tokens: int, cfg: ModelConfig, sp: int, dtype_bytes: int) -> float:
    """Forward bytes one rank sends for one attention layer over ``tokens`` (q, k, v + output)."""
    if sp == 1:
        return 0.0
    rows = math.ceil(tokens / sp)
    return 4 * rows * cfg.num_heads * cfg.head_dim * dtype_bytes * (sp - 1) / sp


def main() -> None:
    args = parse_args()
    passes = 3 if args.ac == "full" else 2  # forward, backward (+ the AC re-run of forward)
    print(f"all-to-all bytes per SP rank; {args.shots} shots x {tuple(args.grid)} patches, "
          f"{args.text_len} text tokens per group, {args.dtype_bytes}-byte activations, "
          f"AC {args.ac}\n")
    step_label = "fwd+bwd+AC re-run" if args.ac == "full" else "fwd+bwd"
    print("| model | joint tokens L | sp | heads / rank | tokens / rank | MiB per layer (fwd) "
          f"| GiB per micro-batch ({step_label}) | attention FLOP per byte (fwd) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        cfg = ModelConfig.from_yaml(CONF / f"{name}.yaml")
        spec = scene(cfg, args.shots, tuple(args.grid), args.text_len)
        joint, text = spec.num_tokens, sum(g.text_len for g in spec.groups)
        layers = cfg.num_dual_blocks + cfg.num_single_blocks
        for sp in args.sp:
            if cfg.num_heads % sp:
                print(f"| {name} | {joint:,} | {sp} | - | - | sp does not divide "
                      f"{cfg.num_heads} heads | | |")
                continue
            per_layer = layer_bytes(joint, cfg, sp, args.dtype_bytes)
            refiner = layer_bytes(text, cfg, sp, args.dtype_bytes)
            step = passes * (layers * per_layer + cfg.num_refiner_blocks * refiner)
            flops = 4 * joint**2 * cfg.num_heads * cfg.head_dim / sp
            intensity = f"{flops / per_layer:,.0f}" if per_layer else "-"
            print(f"| {name} | {joint:,} | {sp} | {cfg.num_heads // sp} | "
                  f"{math.ceil(joint / sp):,} | {per_layer / 2**20:,.1f} | {step / GIB:,.2f} | "
                  f"{intensity} |")


if __name__ == "__main__":
    main()
