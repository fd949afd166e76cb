"""lct-train's HunyuanVideo model against diffusers' ``HunyuanVideoTransformer3DModel``, side by
side: the same weights (diffusers' random init, mapped by lct-convert's key map) and the same
one-shot input (the single-shot layout: no global group, text RoPE off), forward and
forward+backward, the two models alternating in one run.

Printed per pass: the median time of each, the ratio diffusers / lct-train (> 1: lct-train is
faster) and the parity (max |lct - diffusers| / max |diffusers| of the velocity; of the latent's
gradient for forward+backward). lct-train's metadata (packed layout, RoPE, attention plan) is
built once per batch, as the trainer does; diffusers builds its RoPE and mask in every forward.

    python bench/vs_diffusers.py                                   # CPU: small width, fp32
    python bench/vs_diffusers.py --device cuda --dtype bf16 --preset hunyuan-video \\
        --blocks 2 4 --grid 7 30 30 --text-len 64                  # the GPU suite's stage
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs without PYTHONPATH

from lct_train.convert.hunyuan_config import (  # noqa: E402
    DIFFUSERS_NORM_EPS,
    DIFFUSERS_REFINER_MLP_RATIO,
    DIFFUSERS_TIME_FREQ_DIM,
    DIFFUSERS_TIMESTEP_SCALE,
    config_to_diffusers,
)
from lct_train.convert.hunyuan_keymap import HunyuanVideoStateDictAdapter  # noqa: E402
from lct_train.core.dtypes import dtype_of  # noqa: E402
from lct_train.model.config import ModelConfig  # noqa: E402
from lct_train.model.geometry import patchify  # noqa: E402
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta  # noqa: E402

TEXT_PAD = 8  # padded text rows diffusers sees (masked), as a batch of prompts has
TIMESTEP = 0.6
GUIDANCE = 6.0
CPU_WIDTH = dict(num_heads=4, head_dim=32, rope_axes_dim=(8, 12, 12), text_dim=256,
                 pooled_dim=128)  # the `small` preset's width


def diffusers_compatible(cfg: ModelConfig, dual: int, single: int) -> ModelConfig:
    """``cfg`` with ``dual`` + ``single`` blocks and what diffusers fixes (no text RoPE, the
    guidance embedding, its refiner / norm / timestep constants)."""
    return dataclasses.replace(
        cfg, num_dual_blocks=dual, num_single_blocks=single, text_rope=False,
        guidance_embeds=True, num_refiner_blocks=max(1, cfg.num_refiner_blocks),
        refiner_mlp_ratio=DIFFUSERS_REFINER_MLP_RATIO, norm_eps=DIFFUSERS_NORM_EPS,
        time_freq_dim=DIFFUSERS_TIME_FREQ_DIM, timestep_scale=DIFFUSERS_TIMESTEP_SCALE)


def build_pair(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(lct-train model, diffusers model) with the same weights: diffusers' own random init on
    ``device``, copied into the LCT model through the conversion key map."""
    from diffusers import HunyuanVideoTransformer3DModel

    from lct_train.model.mmdit import LCTModel

    torch.manual_seed(seed)
    with device:
        ref = HunyuanVideoTransformer3DModel(**config_to_diffusers(cfg))
    if dtype != torch.float32:
        ref = ref.to(dtype)
    state = ref.state_dict()
    ours = {}
    for rule in HunyuanVideoStateDictAdapter(cfg).from_diffusers(state):
        ours[rule.target] = rule.apply([state[s] for s in rule.sources]).detach().clone()
    with torch.device("meta"):
        model = LCTModel(cfg)
    model.load_state_dict(ours, strict=True, assign=True)
    return model.to(device), ref


@dataclasses.dataclass
class OneShot:
    """A one-shot input in both models' terms."""

    latent: torch.Tensor  # [C, F, H, W]
    text: torch.Tensor  # [L + pad, text_dim], valid rows first
    text_len: int
    pooled: torch.Tensor  # [pooled_dim]
    cotangent: torch.Tensor  # [C, F, H, W]: d loss / d velocity of the backward pass


def one_shot(cfg: ModelConfig, grid, text_len: int, device, dtype, seed: int = 1) -> OneShot:
    gen = torch.Generator().manual_seed(seed)
    pt, ph, pw = cfg.patch_size
    shape = (cfg.latent_channels, grid[0] * pt, grid[1] * ph, grid[2] * pw)

    def rand(*size):
        return torch.randn(*size, generator=gen).to(device, dtype)

    return OneShot(rand(*shape), rand(text_len + TEXT_PAD, cfg.text_dim), text_len,
                   rand(cfg.pooled_dim), rand(*shape))


def lct_forward(model, cfg: ModelConfig, inp: OneShot) -> Callable[[torch.Tensor], torch.Tensor]:
    """``latent -> velocity [C, F, H, W]`` of the LCT model (metadata built here, once)."""
    from lct_train.model.geometry import patch_grid, unpatchify

    grid = patch_grid(inp.latent.shape, cfg.patch_size)
    meta = build_packed_meta([SceneSpec((GroupSpec(inp.text_len, grid),))], mask="bidirectional",
                             text_rope=cfg.text_rope, device=inp.latent.device)
    dev, dtype = inp.latent.device, inp.latent.dtype
    t = torch.tensor([TIMESTEP], device=dev, dtype=dtype)
    g = torch.tensor([GUIDANCE], device=dev, dtype=dtype)
    text, pooled = inp.text[: inp.text_len], inp.pooled[None]

    def run(latent):
        out = model(patchify(latent, cfg.patch_size), text, pooled, t, meta, guidance=g)
        return unpatchify(out, grid, cfg.patch_size, cfg.latent_channels)

    return run


def diffusers_forward(model, inp: OneShot) -> Callable[[torch.Tensor], torch.Tensor]:
    dev, dtype = inp.latent.device, inp.latent.dtype
    mask = torch.zeros(1, inp.text.shape[0], dtype=torch.long, device=dev)
    mask[:, : inp.text_len] = 1
    t = torch.tensor([TIMESTEP * DIFFUSERS_TIMESTEP_SCALE], device=dev, dtype=dtype)
    g = torch.tensor([GUIDANCE * DIFFUSERS_TIMESTEP_SCALE], device=dev, dtype=dtype)

    def run(latent):
        return model(hidden_states=latent[None], timestep=t, encoder_hidden_states=inp.text[None],
                     encoder_attention_mask=mask, pooled_projections=inp.pooled[None],
                     guidance=g, return_dict=False)[0][0]

    return run


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3, out


def compare(cfg: ModelConfig, grid, text_len: int, device: torch.device, dtype: torch.dtype,
            repeats: int = 3, warmup: int = 1) -> Iterator[dict]:
    """One row per pass (``forward``, ``forward+backward``): median ms of both models, the
    time ratio diffusers / lct-train and the parity."""
    lct, ref = build_pair(cfg, device, dtype)
    inp = one_shot(cfg, grid, text_len, device, dtype)
    runs = {"lct-train": lct_forward(lct, cfg, inp), "diffusers": diffusers_forward(ref, inp)}

    def forward(name):
        with torch.no_grad():
            return runs[name](inp.latent)

    def forward_backward(name):
        latent = inp.latent.detach().requires_grad_(True)
        (runs[name](latent) * inp.cotangent).sum().backward()
        return latent.grad

    tokens = text_len + grid[0] * grid[1] * grid[2]
    for label, step in (("forward", forward), ("forward+backward", forward_backward)):
        times: dict[str, list[float]] = {name: [] for name in runs}
        outs = {}
        for i in range(warmup + repeats):
            for name in runs:  # alternating: both see the same machine state
                ms, outs[name] = _timed(lambda n=name, s=step: s(n), device)
                if i >= warmup:
                    times[name].append(ms)
        lct_ms = statistics.median(times["lct-train"])
        ref_ms = statistics.median(times["diffusers"])
        yield {"pass": label, "tokens": tokens, "lct_ms": lct_ms, "diffusers_ms": ref_ms,
               "ratio": ref_ms / lct_ms,
               "max_rel_diff": relative(outs["lct-train"], outs["diffusers"])}
        lct.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16")
    p.add_argument("--preset", default="hunyuan-video", help="conf/model preset")
    p.add_argument("--cpu-width", action="store_true",
                   help="the `small` preset's width (default on CPU)")
    p.add_argument("--blocks", type=int, nargs=2, default=(2, 2), metavar=("DUAL", "SINGLE"))
    p.add_argument("--grid", type=int, nargs=3, default=(2, 8, 8), help="latent patches F H W")
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--attn-backend", default="auto", help="lct-train's attention backend")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cfg = ModelConfig.from_yaml(ROOT / "conf" / "model" / f"{args.preset}.yaml")
    if args.cpu_width or device.type == "cpu":
        cfg = dataclasses.replace(cfg, **CPU_WIDTH)
    cfg = dataclasses.replace(diffusers_compatible(cfg, *args.blocks),
                              attn_backend=args.attn_backend)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"model: {args.preset} layout, width {cfg.hidden_size} ({cfg.num_heads} x "
          f"{cfg.head_dim}), {cfg.num_dual_blocks} dual + {cfg.num_single_blocks} single blocks, "
          f"{args.dtype} on {device}, lct-train attention {cfg.attn_backend}; one shot: "
          f"{args.text_len} text + {tuple(args.grid)} video patches")
    for row in compare(cfg, tuple(args.grid), args.text_len, device, dtype_of(args.dtype),
                       args.repeats, args.warmup):
        print(f"{row['pass']:<17} lct-train {row['lct_ms']:9.2f} ms   diffusers "
              f"{row['diffusers_ms']:9.2f} ms   diffusers/lct {row['ratio']:5.2f}   "
              f"max rel diff {row['max_rel_diff']:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
