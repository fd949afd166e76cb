"""A ``finetune=lora`` run: which layers get adapters, the frozen base, what a checkpoint
records about that base and what a resume checks.

The adapters are added to the bare model on the meta device, before ``parallelize`` (so FSDP2
shards base and adapters of a block in one unit; only the adapters are trainable, so the
unit's reduce-scatter carries the adapters' gradients alone). The base is filled from
``stage.init_from`` at every start, resumes included (it is not in the checkpoints), then
the adapters: initialised (A Kaiming-uniform, B = 0: step 0 is the base model) or restored.

A checkpoint names its base by ``stage.init_from`` and a checksum: the float64 sum and sum of
squares of every base value, over the whole model (independent of the world size up to float64
rounding). The checksum is recomputed at every save, so a checkpoint also proves that training
left the base untouched; a resume whose base has another checksum is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lct_train.core.dtypes import dtype_of
from lct_train.core.errors import ConfigError
from lct_train.model.lora import apply_lora, freeze_base, is_adapter, is_base, match_targets
from lct_train.parallel.parallelize import init_sharded
from lct_train.train.init_weights import weight_sums

META_KEY = "lora"
# Settings of the finetune group that change the adapters' parameters or their meaning.
ADAPTER_FIELDS = ("rank", "alpha", "targets")
CHECKSUM_REL_TOL = 1e-9  # float64 sums over another sharding differ in the last bits only


def add_adapters(model: nn.Module, cfg) -> int:
    """Wraps the targeted layers of the bare (meta) ``model`` and freezes its base; returns the
    number of adapted layers. A pattern that matches no layer is a one-line error."""
    ft = cfg.finetune
    targets = tuple(ft.targets) or tuple(getattr(model, "lora_targets", ()))
    if not targets:
        raise ConfigError("finetune.targets", f"is empty and {type(model).__name__} declares "
                          "no default lora_targets")
    names, unmatched = match_targets(model, targets)
    if not ft.targets and names:
        unmatched = []  # a family default may name layers this size of model lacks
    if unmatched or not names:
        unmatched = unmatched or [0]
        i = unmatched[0]
        key = f"finetune.targets[{i}]" if ft.targets else "finetune.targets"
        raise ConfigError(key, f"{targets[i]!r} matches no nn.Linear of {type(model).__name__} "
                          "(patterns are full-matched against names such as "
                          "'transformer_blocks.0.attn.to_q')")
    apply_lora(model, names, ft.rank, ft.alpha, ft.dropout)
    base = ft.base_dtype if ft.base_dtype != "compute" else cfg.parallel.param_dtype
    freeze_base(model, dtype_of(base))
    return len(names)


def init_adapters(model: nn.Module, seed: int) -> None:
    init_sharded(model, seed, select=is_adapter)


def base_checksum(model: nn.Module, device: torch.device, replicas: int) -> list[float]:
    """``[sum, sum of squares]`` of the base weights (collective)."""
    return list(weight_sums(model, device, replicas, select=is_base))


def adapter_count(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if is_adapter(n))


def checkpoint_meta(cfg, checksum: list[float]) -> dict:
    """What ``lct_meta.json`` records about the base and the adapters."""
    base = cfg.stage.init_from
    if base not in ("scratch", "auto") and Path(base).exists():
        base = str(Path(base).resolve())
    return {"base": base, "base_checksum": checksum,
            **{k: _plain(getattr(cfg.finetune, k)) for k in ADAPTER_FIELDS}}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def check_resume(meta: dict, cfg, checksum: list[float], path: Path) -> None:
    """Refuses a checkpoint that is not this LoRA run's: a full fine-tuning checkpoint, other
    adapter settings, or another base."""
    lora = meta.get(META_KEY)
    if lora is None:
        raise ConfigError("finetune.mode", f"{path} is a full fine-tuning checkpoint; resume it "
                          "with finetune=full (or start a LoRA run with resume=none)")
    for key in ADAPTER_FIELDS:
        if lora[key] != _plain(getattr(cfg.finetune, key)):
            raise ConfigError(f"finetune.{key}", f"checkpoint {path} has {lora[key]!r}, this "
                              f"run {_plain(getattr(cfg.finetune, key))!r}")
    saved = lora["base_checksum"]
    if not all(math.isclose(a, b, rel_tol=CHECKSUM_REL_TOL) for a, b in zip(saved, checksum)):
        raise ConfigError("stage.init_from", f"the base weights ({cfg.stage.init_from}, checksum "
                          f"{checksum[0]:.9e}/{checksum[1]:.9e}) are not the ones {path} was "
                          f"trained on ({lora['base']}, checksum {saved[0]:.9e}/{saved[1]:.9e})")


def check_not_lora(meta: dict, path: Path) -> None:
    """A full fine-tuning run cannot resume a LoRA checkpoint (it holds no base)."""
    if META_KEY in meta:
        raise ConfigError("finetune.mode", f"{path} is a LoRA checkpoint (adapters only): "
                          "resume it with finetune=lora")
