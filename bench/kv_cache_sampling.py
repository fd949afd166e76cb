"""Auto-regressive sampling of n = 2..9 shots: KV cache vs full recompute (CPU).

For each n, one scene of n equal shots is generated shot by shot (context = all earlier
shots) with a context-causal random model, once recomputing the whole
context at every step (mode ``ar``) and once with the per-branch KV caches (mode ``ar-kv``).
Printed per n: wall time of both, speedup, the exact (mask-respecting) joint-attention FLOPs
and total model FLOPs of both paths and their ratios, the max |difference| of the generated
latents, and whether speedup >= GOAL_FRACTION x the attention-FLOP ratio.

    python bench/kv_cache_sampling.py [--steps 8] [--min-shots 2] [--max-shots 9] [--repeat 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.geometry import patch_grid
from lct_train.model.mmdit import LCTModel
from lct_train.sample.inputs import PromptEmbedding
from lct_train.sample.modes import AR, AR_KV, PlannedShot, generate_scene
from lct_train.sample.sampler import COND, UNCOND, Sampler, SamplingSettings
from lct_train.train.flops import ATTN_MATMULS, MATMUL_FLOPS

GOAL_FRACTION = 0.8
SEED = 0
TEXT_TOKENS = 16  # per prompt (global and shots)
EMPTY_PROMPT_TOKENS = 1  # the uncond branch's empty prompt, in every group
SHOT_LATENT = (4, 4, 16, 16)  # [C, F, H, W] -> 4 x 8 x 8 = 256 video tokens with patch (1, 2, 2)
BENCH_MODEL = dict(  # attention-heavy for its size, like long scenes are
    latent_channels=4,
    num_heads=4,
    head_dim=32,
    num_dual_blocks=2,
    num_single_blocks=2,
    mlp_ratio=2.0,
    text_dim=32,
    pooled_dim=16,
    num_refiner_blocks=1,
    rope_axes_dim=(8, 12, 12),
    dummy_grid=(1, 2, 2),
    attn_backend="reference",
)


@dataclass(frozen=True)
class ShotGeometry:
    """Every shot's latent and every prompt's text length (global and shots)."""

    text_tokens: int = TEXT_TOKENS
    shot_latent: tuple[int, int, int, int] = SHOT_LATENT


def _prompt(gen: torch.Generator, cfg: ModelConfig, text_tokens: int) -> PromptEmbedding:
    return PromptEmbedding(
        torch.randn(text_tokens, cfg.text_dim, generator=gen),
        torch.randn(cfg.pooled_dim, generator=gen),
    )


def _group_tokens(cfg: ModelConfig, geo: ShotGeometry, text_tokens: int) -> tuple[int, int]:
    """Joint tokens of the global group and of one shot, each with ``text_tokens`` text."""
    return (text_tokens + cfg.num_dummy_tokens,
            text_tokens + math.prod(patch_grid(geo.shot_latent, cfg.patch_size)))


def _pairs(prefix: int, groups: list[int]) -> int:
    """Query-key pairs of context-causal attention for ``groups`` after ``prefix`` keys."""
    total, end = 0, prefix
    for g in groups:
        end += g
        total += g * end
    return total


def branch_text_tokens(branches, geo: ShotGeometry) -> list[int]:
    """Text tokens per group in each guidance branch: the prompts (cond), the empty prompt
    (uncond)."""
    return [{COND: geo.text_tokens, UNCOND: EMPTY_PROMPT_TOKENS}[b] for b in branches]


def flop_counts(cfg: ModelConfig, geo: ShotGeometry, n: int, steps: int, text_tokens: list[int],
                block_params: int):
    """(attention FLOPs, total FLOPs) of recompute and of the KV cache for n AR shots;
    ``text_tokens``: text tokens per group of each guidance branch (``branch_text_tokens``)."""
    per_pair = MATMUL_FLOPS * ATTN_MATMULS * cfg.hidden_size
    layers = cfg.num_dual_blocks + cfg.num_single_blocks
    per_token = MATMUL_FLOPS * block_params
    rec_attn = rec_tok = kv_attn = kv_tok = 0
    for text in text_tokens:  # one forward per branch, each with its own prompt lengths
        glob, shot = _group_tokens(cfg, geo, text)
        for k in range(n):  # shot k after k history shots
            groups = [glob] + [shot] * (k + 1)
            rec_attn += steps * _pairs(0, groups)
            rec_tok += steps * sum(groups)
            appended = [glob] if k == 0 else [shot]  # cache grows by the latest shot
            cached = glob + shot * (k - 1) if k else 0
            kv_attn += _pairs(cached, appended) + steps * _pairs(glob + shot * k, [shot])
            kv_tok += sum(appended) + steps * shot
    scale = per_pair * layers
    return (
        (rec_attn * scale, rec_attn * scale + rec_tok * per_token),
        (kv_attn * scale, kv_attn * scale + kv_tok * per_token),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(n: int, sampler: Sampler, cfg: ModelConfig, geo: ShotGeometry, mode: str):
    gen = torch.Generator().manual_seed(SEED)
    global_prompt = _prompt(gen, cfg, geo.text_tokens)
    shots = [PlannedShot(f"shot {i}", _prompt(gen, cfg, geo.text_tokens), SEED + i,
                         geo.shot_latent) for i in range(n)]
    sync(sampler.device)
    start = time.perf_counter()
    out = generate_scene(sampler, global_prompt, shots, mode)  # shots come back on the host
    return time.perf_counter() - start, torch.stack([s.latent for s in out])


def best_of(repeat: int, n: int, sampler: Sampler, cfg: ModelConfig, geo: ShotGeometry):
    """Best wall time of each mode over ``repeat`` interleaved runs (the CPUs are shared)."""
    times: dict[str, list[float]] = {AR: [], AR_KV: []}
    latents = {}
    for _ in range(repeat):
        for mode in (AR, AR_KV):
            seconds, latents[mode] = run(n, sampler, cfg, geo, mode)
            times[mode].append(seconds)
    return min(times[AR]), min(times[AR_KV]), latents[AR], latents[AR_KV]


def bench_model_config(**overrides) -> ModelConfig:
    """The benchmark's context-causal model: ``BENCH_MODEL`` unless overridden."""
    return dataclasses.replace(ModelConfig(), **{**BENCH_MODEL, **overrides})


def build_sampler(cfg: ModelConfig, steps: int, guidance: float, window: int,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(sampler, parameters of the blocks) of a random context-causal model."""
    torch.manual_seed(SEED)
    model = LCTModel(cfg).to(device, dtype).eval()
    block_params = sum(
        p.numel()
        for m in (model.transformer_blocks, model.single_transformer_blocks)
        for p in m.parameters()
    )
    settings = SamplingSettings(steps=steps, guidance=guidance, t_c=0.3)
    sampler = Sampler(
        model,
        cfg,
        PromptEmbedding(torch.zeros(EMPTY_PROMPT_TOKENS, cfg.text_dim), torch.zeros(cfg.pooled_dim)),
        mask="causal",
        window=window,
        settings=settings,
    )
    return sampler, block_params


def kv_rows(sampler: Sampler, cfg: ModelConfig, geo: ShotGeometry, block_params: int,
            shots: Iterable[int], repeat: int, warmup: bool = True) -> Iterator[dict]:
    """One row per n: both wall times, speedup, FLOPs and ratios, max |diff|, goal."""
    for mode in (AR, AR_KV) if warmup else ():  # warm-up (on CUDA: compile) both paths
        run(2, sampler, cfg, geo, mode)
    steps = sampler.settings.steps
    for n in shots:
        t_rec, t_kv, z_rec, z_kv = best_of(repeat, n, sampler, cfg, geo)
        (a_rec, f_rec), (a_kv, f_kv) = flop_counts(
            cfg, geo, n, steps, branch_text_tokens(sampler.branches, geo), block_params
        )
        speedup, ratio = t_rec / t_kv, a_rec / a_kv
        yield {"n": n, "recompute_s": t_rec, "kv_s": t_kv, "speedup": speedup,
               "attn_gflop_recompute": a_rec / 1e9, "attn_gflop_kv": a_kv / 1e9,
               "attn_ratio": ratio, "total_ratio": f_rec / f_kv,
               "max_abs_diff": (z_rec.float() - z_kv.float()).abs().max().item(),
               "goal": "PASS" if speedup >= GOAL_FRACTION * ratio else "FAIL"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--min-shots", type=int, default=2)
    parser.add_argument("--max-shots", type=int, default=9)
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="CFG scale (> 1: two branches, two caches; the uncond branch "
                             "has the empty prompt's length)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs (shared CPUs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg, geo = bench_model_config(), ShotGeometry()
    sampler, block_params = build_sampler(cfg, args.steps, args.guidance, args.max_shots)
    glob, shot = _group_tokens(cfg, geo, geo.text_tokens)
    print(
        f"kv_cache_sampling: hidden={cfg.hidden_size} layers="
        f"{cfg.num_dual_blocks}+{cfg.num_single_blocks} shot={shot} tokens global={glob} "
        f"steps={args.steps} branches={len(sampler.branches)} threads={args.threads} "
        f"backend={cfg.attn_backend}"
    )
    print(
        f"{'n':>2} {'recompute s':>11} {'kv s':>7} {'speedup':>7} {'attn GF rec':>11} "
        f"{'attn GF kv':>10} {'attn ratio':>10} {'total ratio':>11} {'max|diff|':>9} "
        f"goal(>={GOAL_FRACTION}x attn)"
    )
    for r in kv_rows(sampler, cfg, geo, block_params, range(args.min_shots, args.max_shots + 1),
                     args.repeat):
        print(
            f"{r['n']:>2} {r['recompute_s']:>11.2f} {r['kv_s']:>7.2f} {r['speedup']:>7.2f} "
            f"{r['attn_gflop_recompute']:>11.2f} {r['attn_gflop_kv']:>10.2f} "
            f"{r['attn_ratio']:>10.2f} {r['total_ratio']:>11.2f} {r['max_abs_diff']:>9.1e} "
            f"{r['goal']}", flush=True
        )


if __name__ == "__main__":
    main()
