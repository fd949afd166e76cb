"""AdamW over the (sharded) parameters, the learning-rate schedule, gradient clipping.

Schedule: linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` optimizer
steps, then constant, or cosine down to ``lr * min_lr_ratio`` at the last step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, weight_decay: float, no_decay_1d: bool) -> list[dict]:
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if no_decay_1d and param.dim() <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


FUSED_DEVICES = ("cuda", "cpu")  # where torch has fused AdamW kernels


def build_optimizer(model: nn.Module, optim_cfg, device: torch.device) -> torch.optim.AdamW:
    impl = optim_cfg.implementation
    if impl == "auto":
        impl = "fused" if device.type in FUSED_DEVICES else "foreach"
    return torch.optim.AdamW(
        param_groups(model, optim_cfg.weight_decay, optim_cfg.no_decay_1d),
        lr=optim_cfg.lr,
        betas=tuple(optim_cfg.betas),
        eps=optim_cfg.eps,
        fused=impl == "fused",
        foreach=impl == "foreach",
    )


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str,
              min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based: the first update is 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int) -> LambdaLR:
    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=optim_cfg.warmup_steps, total_steps=total_steps,
                         schedule=optim_cfg.schedule, min_lr_ratio=optim_cfg.min_lr_ratio)

    return LambdaLR(optimizer, factor)


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global gradient norm (over all shards) as a local device tensor; clips when max_norm > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    # DTensor grads (FSDP2) give a DTensor norm, already replicated (get_total_norm's one
    # all-reduce): take the plain global value first and clip with it (torchtitan's order).
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


def group_settings(optim_cfg, group_index: int) -> dict:
    """The hyperparameters of param group ``group_index`` (0: decayed, 1: no decay)."""
    return {"lr": optim_cfg.lr, "betas": tuple(optim_cfg.betas), "eps": optim_cfg.eps,
            "weight_decay": optim_cfg.weight_decay if group_index == 0 else 0.0}


def apply_config(optimizer: torch.optim.Optimizer, scheduler: LambdaLR, optim_cfg) -> list[str]:
    """Puts the config's optimizer and schedule settings over a restored state (resume).

    The restored moments and the schedule position stay; the base learning rate, betas, eps
    and weight decay come from ``optim_cfg`` and the current lr is recomputed from the
    config's schedule at the restored step. Returns ``"optim.<key> old -> new"`` for each
    setting that differed from the checkpoint's.
    """
    changes: dict[str, str] = {}
    for i, group in enumerate(optimizer.param_groups):
        want = group_settings(optim_cfg, i)
        saved = dict(group, lr=scheduler.base_lrs[i])
        for key, value in want.items():
            old = tuple(saved[key]) if key == "betas" else saved[key]
            if old != value:
                changes.setdefault(f"optim.{key}", f"optim.{key} {old} -> {value}")
            if key != "lr":
                group[key] = value
        group["initial_lr"] = want["lr"]
    scheduler.base_lrs = [optim_cfg.lr for _ in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs,
                                   scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return list(changes.values())
