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

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from lct_train.convert.dcp_export import load_dcp_weights
from lct_train.convert.lora_export import lora_keymap, read_diffusers_lora
from lct_train.core import checkpoint_layout as layout
from lct_train.core.dtypes import dtype_of
from lct_train.core.errors import ConfigError, ConversionError
from lct_train.core.fqn import clean_fqn
from lct_train.model.lora import (
    LoRALinear,
    apply_lora,
    freeze_base,
    is_adapter,
    is_base,
    match_targets,
)
from lct_train.parallel.parallelize import init_sharded
from lct_train.train.init_weights import (
    check_same_architecture,
    checkpoint_source,
    init_weights,
    local_rows,
    weight_sums,
)

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
    if ft.targets and unmatched:  # (a family default may name layers a small model lacks)
        i = unmatched[0]
        raise ConfigError(f"finetune.targets[{i}]", f"{targets[i]!r} matches no nn.Linear of "
                          f"{type(model).__name__} (patterns are full-matched against names "
                          "such as 'transformer_blocks.0.attn.to_q')")
    if not names:
        raise ConfigError("finetune.targets", f"the defaults of {type(model).__name__} match "
                          "no nn.Linear of this model: give finetune.targets")
    apply_lora(model, names, ft.rank, ft.alpha, ft.dropout)
    base = ft.base_dtype if ft.base_dtype != "compute" else cfg.parallel.param_dtype
    freeze_base(model, dtype_of(base))
    return len(names)


def init_adapters(model: nn.Module, seed: int) -> None:
    init_sharded(model, seed, select=is_adapter)


def fill(model: nn.Module, cfg) -> tuple[str, str]:
    """Base and adapters of a LoRA run's (sharded) model at start; returns the log line and
    the base's name for the checkpoints.

    ``stage.init_from`` names the base (as for full fine-tuning) or a LoRA run's checkpoint
    (stage 2 after a LoRA stage 1): then the base is that run's base, and its adapters are
    continued or merged into the base (``finetune.from_lora``).
    """
    ckpt = checkpoint_source(cfg.stage)
    stage1 = layout.read_meta(ckpt).get(META_KEY) if ckpt is not None else None
    if stage1 is None:
        source = init_weights(model, cfg.stage, cfg.model, cfg.seed)
        init_adapters(model, cfg.seed)
        if cfg.finetune.init_lora:
            load_lora_file(model, cfg)
            source += f"; adapters from {cfg.finetune.init_lora}"
        return source, _base_name(cfg.stage.init_from)
    if cfg.finetune.init_lora:
        raise ConfigError("finetune.init_lora", f"stage.init_from is the LoRA run {ckpt}, whose "
                          "adapters start this run (finetune.from_lora): leave init_lora empty")
    check_same_architecture(cfg.model, ckpt)
    stage1_seed = layout.read_meta(ckpt)["config"]["seed"]
    base_stage = dataclasses.replace(cfg.stage, init_from=stage1["base"], init_weights="model")
    source = init_weights(model, base_stage, cfg.model, stage1_seed)
    try:
        adapters = load_dcp_weights(ckpt, "model", torch.float32)
    except ConversionError as err:
        raise ConfigError("stage.init_from", str(err)) from err
    init_adapters(model, cfg.seed)
    scaling = float(stage1["alpha"]) / int(stage1["rank"])
    if cfg.finetune.from_lora == "merge":
        merge_into_base(model, adapters, scaling)
        return f"{source} + the merged adapters of {ckpt}; new adapters", str(ckpt)
    for key in ADAPTER_FIELDS:
        if stage1[key] != _plain(getattr(cfg.finetune, key)):
            raise ConfigError(f"finetune.{key}", f"stage-1 run {ckpt} has {stage1[key]!r}, this "
                              f"run {_plain(getattr(cfg.finetune, key))!r}: continuing its "
                              "adapters needs the same (or set finetune.from_lora=merge)")
    copy_into_shards(model, adapters)
    return f"{source}; the adapters of {ckpt} (continued)", stage1["base"]


def _base_name(init_from: str) -> str:
    if init_from not in ("scratch", "auto") and Path(init_from).exists():
        return str(Path(init_from).resolve())
    return init_from


@torch.no_grad()
def copy_into_shards(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Full tensors (bare FQNs, every rank holds them) into the model's local shards."""
    params = {clean_fqn(n): p for n, p in model.named_parameters()}
    for key, full in tensors.items():
        param = params[key]
        full = full.to(param.dtype)
        if isinstance(param, DTensor):  # every rank holds ``full``: slice, no communication
            local = param.to_local()
            rows, start = local_rows(param)
            full = full[start:start + rows.shape[0]]
        else:
            local = param.data
        local.copy_(full)


@torch.no_grad()
def merge_into_base(model: nn.Module, adapters: dict[str, torch.Tensor], scaling: float) -> None:
    """``W += scaling * B @ A`` on each rank's rows of every base weight an adapter names."""
    params = {clean_fqn(n): p for n, p in model.named_parameters()}
    modules = {k.removesuffix(".lora_A.weight") for k in adapters if k.endswith(".lora_A.weight")}
    for module in sorted(modules):
        weight = params.get(f"{module}.weight")
        if weight is None:
            raise ConfigError("stage.init_from", f"stage-1 adapter {module} has no base weight")
        local, start = local_rows(weight)
        b = adapters[f"{module}.lora_B.weight"][start:start + local.shape[0]]
        delta = b @ adapters[f"{module}.lora_A.weight"] * scaling
        local.copy_((local.float() + delta).to(local.dtype))


def load_lora_file(model: nn.Module, cfg) -> None:
    """``finetune.init_lora``: a diffusers LoRA file into the adapters. Its layers and rank
    must be this run's; B is rescaled from the file's alpha to ``finetune.alpha``."""
    ft, key = cfg.finetune, "finetune.init_lora"
    try:
        adapters, rank, alpha = read_diffusers_lora(ft.init_lora, lora_keymap(cfg.model))
    except ConversionError as err:
        raise ConfigError(key, str(err).splitlines()[0]) from err
    if rank != ft.rank:
        raise ConfigError(key, f"{ft.init_lora} has rank {rank}, finetune.rank is {ft.rank}")
    ours = {clean_fqn(n) for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    theirs = {k.removesuffix(".lora_A.weight") for k in adapters if k.endswith("lora_A.weight")}
    if theirs != ours:
        extra, missing = sorted(theirs - ours), sorted(ours - theirs)
        what = (f"adapts {len(extra)} layer(s) this run does not (e.g. {extra[0]})" if extra
                else f"lacks {len(missing)} of this run's layers (e.g. {missing[0]})")
        raise ConfigError(key, f"{ft.init_lora} {what}: set finetune.targets to its layers")
    shapes = {clean_fqn(n): tuple(p.shape) for n, p in model.named_parameters() if is_adapter(n)}
    for name, value in adapters.items():
        if tuple(value.shape) != shapes[name]:
            raise ConfigError(key, f"{ft.init_lora}: {name} has shape {tuple(value.shape)}, "
                              f"this model's is {shapes[name]}")
    copy_into_shards(model, {k: v * (alpha / ft.alpha) if k.endswith("lora_B.weight") else v
                             for k, v in adapters.items()})


def base_checksum(model: nn.Module, device: torch.device, replicas: int) -> list[float]:
    """``[sum, sum of squares]`` of the base weights (collective)."""
    return list(weight_sums(model, device, replicas, select=is_base))


def adapter_count(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if is_adapter(n))


def checkpoint_meta(cfg, base: str, checksum: list[float]) -> dict:
    """What ``lct_meta.json`` records about the base (its name from `fill`) and adapters."""
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
