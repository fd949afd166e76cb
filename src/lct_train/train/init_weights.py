"""A run's starting weights (``stage.init_from``) when it does not resume from its own checkpoint.

The model reaching here was built on the meta device, sharded and given (uninitialised) storage;
every path below fills every parameter.

- ``scratch``: ``lct_train.model.init`` (adaLN-zero) drawn from ``seed``, the same full weights
  for any world size (``lct_train.parallel.parallelize.init_sharded``).
- a safetensors export: a ``.safetensors`` file or a directory holding one or shards + index
  (e.g. ``lct-convert export`` / ``import-diffusers``), the bare model's FQNs (either family). Keys and shapes
  are checked strictly on every rank from the headers (``lct_train.convert``: one error lists
  every mismatch); rank 0 reads the tensors and broadcasts them into the shards.
- a training checkpoint (a ``step-N`` directory or a run directory) or ``auto`` (the newest
  checkpoint of ``stage.init_run``): its ``model`` or ``ema`` weights (``stage.init_weights``),
  read sharded through DCP (any saved world size). The checkpoint's model config must match.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from lct_train.convert.model_spec import checkpoint_model_config
from lct_train.core import checkpoint_layout as layout
from lct_train.core.errors import ConfigError, ConversionError, check_keys_and_shapes
from lct_train.core.fqn import clean_fqn
from lct_train.core.safetensors_io import SafetensorsReader
from lct_train.model.lora import is_base
from lct_train.parallel.parallelize import init_sharded
from lct_train.train.checkpoint import load_model_weights, model_state

# Model settings that do not change the parameters (may differ between stages).
NON_ARCH_FIELDS = ("attn_backend", "sampling")


def local_rows(param: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This rank's part of ``param`` and the global row (dim 0) where it starts."""
    if not isinstance(param, DTensor):
        return param.data, 0
    _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh,
                                                      param.placements)
    return param.to_local(), (offset[0] if offset else 0)


@torch.no_grad()
def load_safetensors(model: nn.Module, path: Path) -> None:
    """A consolidated export (file or sharded directory) into the sharded ``model``.

    Every rank reads only the rows of its own shards (safetensors slices read just those
    bytes), so no host holds the full model. A failure on any rank fails every rank with the
    same message: each rank's error (or None) is gathered before anyone raises.
    """
    error = None
    try:
        with SafetensorsReader(path) as reader:
            params = {clean_fqn(k): p for k, p in model.named_parameters()
                      if is_base(clean_fqn(k))}
            check_keys_and_shapes(reader.shapes(), {k: tuple(v.shape) for k, v in params.items()},
                                  what=f"initial weights {path}")
            for key, param in params.items():
                local, start = local_rows(param)
                rows = local.shape[0] if local.dim() else 0
                local.copy_(reader.get_rows(key, start, start + rows).to(local.dtype))
    except (ConversionError, OSError) as err:
        error = f"{err} (rank {dist.get_rank()})" if dist.is_initialized() else str(err)
    errors = [error]
    if dist.is_initialized() and dist.get_world_size() > 1:
        errors = [None] * dist.get_world_size()
        dist.all_gather_object(errors, error)
    failed = [e for e in errors if e is not None]
    if failed:
        raise ConfigError("stage.init_from", failed[0])


def check_same_architecture(ours, ckpt: Path) -> None:
    """``ours`` (a model config of either family) has the parameters of ``ckpt``'s model."""
    try:
        their_cfg = checkpoint_model_config(layout.read_meta(ckpt), ckpt)
    except layout.CheckpointLayoutError as err:
        raise ConfigError("model", f"cannot compare with the model of {ckpt}: {err}") from err
    if their_cfg.family != ours.family:
        raise ConfigError("model", f"is a {ours.family} model, {ckpt} holds a {their_cfg.family} "
                          "model")
    theirs = their_cfg.to_dict()
    diffs = [f"{k}: checkpoint {theirs[k]!r} != run {v!r}" for k, v in ours.to_dict().items()
             if k not in NON_ARCH_FIELDS and theirs[k] != v]
    if diffs:
        raise ConfigError("model", f"does not match the model of {ckpt}: " + "; ".join(diffs))


def checkpoint_source(stage_cfg) -> Path | None:
    """The checkpoint ``stage.init_from`` names (``auto``: of ``stage.init_run``), or None when
    it names something else (a safetensors export)."""
    if stage_cfg.init_from == "auto":
        key, spec = "stage.init_run", stage_cfg.init_run
    elif layout.holds_checkpoint(stage_cfg.init_from):
        key, spec = "stage.init_from", stage_cfg.init_from
    else:
        return None
    try:
        return layout.resolve_checkpoint(spec, key)
    except layout.CheckpointLayoutError as err:
        raise ConfigError(key, str(err).removeprefix(f"{key}: ")) from err


def load_checkpoint_weights(model: nn.Module, ckpt: Path, weights: str) -> None:
    try:
        stored = layout.stored_weight_sets(layout.dcp_metadata(ckpt))
    except layout.CheckpointLayoutError as err:
        raise ConfigError("stage.init_from", str(err)) from err
    if weights not in stored:
        raise ConfigError("stage.init_weights", f"{ckpt} holds no `{weights}` weights (it has "
                          f"{stored}); set stage.init_weights={stored[0] if stored else 'model'}")
    try:
        load_model_weights(model, ckpt, weights, select=is_base)
    except Exception as err:  # DCP reports a missing key set with a long traceback
        raise ConfigError("stage.init_weights", f"cannot load `{weights}` weights from {ckpt}: "
                          f"{err}") from err


def init_weights(model: nn.Module, stage_cfg, model_cfg, seed: int) -> str:
    """Fills the (sharded) model from ``stage.init_from``; returns a description for the log."""
    spec = stage_cfg.init_from
    if spec == "scratch":
        init_sharded(model, seed, select=is_base)
        return f"scratch (adaLN-zero init, seed {seed})"
    ckpt = checkpoint_source(stage_cfg)
    if ckpt is None:
        if not Path(spec).exists():
            raise ConfigError("stage.init_from", f"{spec} does not exist (expected scratch, auto, "
                              "a training checkpoint or a safetensors file / export directory)")
        load_safetensors(model, Path(spec))
        return f"safetensors {spec}"
    check_same_architecture(model_cfg, ckpt)
    load_checkpoint_weights(model, ckpt, stage_cfg.init_weights)
    return f"checkpoint {ckpt} ({stage_cfg.init_weights} weights)"


@torch.no_grad()
def model_fingerprint(model: nn.Module, device: torch.device, replicas: int = 1) -> float:
    """Sum of every parameter value over the whole model (collective: call on every rank).
    Logged at start to make weight hand-offs checkable."""
    return weight_sums(model, device, replicas)[0]


@torch.no_grad()
def weight_sums(model: nn.Module, device: torch.device, replicas: int = 1,
                select=None) -> tuple[float, float]:
    """``(sum, sum of squares)`` of the parameter values ``select(fqn)`` accepts (all by
    default), in float64 over the whole model (collective: call on every rank).

    Sums the local shards and all-reduces; ``replicas`` (HSDP replicate degree) undoes the
    double count of replicated shards.
    """
    local = torch.zeros(2, dtype=torch.float64, device=device)
    for value in model_state(model, select).values():
        shard = value.to_local() if hasattr(value, "to_local") else value
        shard = shard.double()
        local += torch.stack([shard.sum(), shard.square().sum()])
    dist.all_reduce(local)
    total, squares = (local / replicas).tolist()
    return total, squares
