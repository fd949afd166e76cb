"""What ``lct-estimate`` prints: peak per rank by category, the GPU assumed, the verdict, and
as its last line one JSON object (``peak_bytes gpu_bytes fits tokens_per_rank world_size`` ...)."""

from __future__ import annotations

import json

from lct_train.config.schema import TrainConfig
from lct_train.estimate.config import EstimateConfig
from lct_train.estimate.run import Measured
from lct_train.estimate.scene import describe

# Report categories: FSDPMemTracker reference types summed.
CATEGORIES = {
    "parameters": ("Sharded Param", "Unsharded Param", "Buffer"),
    "gradients": ("Sharded Grad", "Unsharded Grad"),
    "optimizer_states": ("OptState",),
    "activations": ("Activation", "Inputs"),
    "temporaries": ("Temp", "All Gather", "Reduce Scatter"),
}
GB = 1e9



def summary(cfg: TrainConfig, est: EstimateConfig, measured: Measured, gpu_bytes: int,
            model: str) -> dict:
    cats = {name: sum(measured.categories.get(k, 0) for k in keys)
            for name, keys in CATEGORIES.items()}
    cats["metadata"] = measured.metadata_bytes
    usable = int(gpu_bytes * (1 - est.headroom))
    peak = measured.peak_bytes
    sp = cfg.parallel.sp_degree
    spec = measured.spec
    shot = next(g for g in spec.groups if not g.is_global)
    return {
        "model": model,
        "params": measured.params,
        "trainable_params": measured.trainable,
        "finetune": cfg.finetune.mode,
        "world_size": est.world_size,
        "sp_degree": sp,
        "tokens": spec.num_tokens,
        "tokens_per_rank": -(-spec.num_tokens // sp),
        "shots": spec.num_shots,
        "shot_grid": list(shot.grid),
        "text_len": shot.text_len,
        "geometry": describe(spec, cfg.model),
        "grad_accum": cfg.optim.grad_accum,
        "defer_grad_sync": cfg.parallel.defer_grad_sync,
        "activation_checkpoint": cfg.parallel.activation_checkpoint,
        "reshard_after_forward": cfg.parallel.reshard_after_forward,
        "param_dtype": cfg.parallel.param_dtype,
        "attention": est.attention,
        "categories": cats,
        "peak_bytes": peak,
        "gpu_bytes": gpu_bytes,
        "headroom": est.headroom,
        "usable_bytes": usable,
        "fits": peak <= usable,
    }


def render(result: dict) -> str:
    lines = [
        f"lct-estimate: {result['params'] / 1e9:.2f}B parameters ({result['finetune']} "
        f"fine-tuning: {result['trainable_params'] / 1e9:.3f}B trained), "
        f"{result['world_size']} ranks "
        f"(sp {result['sp_degree']}), AC {result['activation_checkpoint']}, "
        f"reshard_after_forward {result['reshard_after_forward']}, "
        f"grad_accum {result['grad_accum']}, attention {result['attention']}",
        f"scene: {result['geometry']} ({result['tokens_per_rank']:,} tokens per rank)",
        "peak per rank:",
    ]
    for name, value in result["categories"].items():
        lines.append(f"  {name:<17} {value / GB:9.2f} GB")
    lines.append(f"  {'total':<17} {result['peak_bytes'] / GB:9.2f} GB")
    verdict = "fits" if result["fits"] else "does NOT fit"
    lines.append(f"GPU {result['gpu_bytes'] / GB:.0f} GB, usable with "
                 f"{result['headroom']:.0%} headroom {result['usable_bytes'] / GB:.1f} GB: "
                 f"{verdict} ({result['peak_bytes'] / result['gpu_bytes']:.0%} of the GPU)")
    lines.append(json.dumps(result, sort_keys=True))
    return "\n".join(lines)
