"""A run's starting weights (``stage.init_from``) when it does not resume from its own checkpoint.

- ``scratch``: the model's own initialisation (seeded; the same on every rank).
- a ``.safetensors`` file (or a directory holding ``model.safetensors``): a consolidated
  single-shot / exported model (bare ``LCTModel`` FQNs, e.g. from ``lct-convert``). Keys and
  shapes are checked strictly on every rank from the file header (one error lists every
  mismatch); rank 0 reads the tensors and broadcasts them into the shards.
- a training checkpoint directory (``step-N``) or ``auto`` (the newest checkpoint of
  ``stage.init_run``): its ``model`` or ``ema`` weights (``stage.init_weights``), read sharded
  through DCP (any saved world size). The checkpoint's model config must match the run's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from lct_train.config.validate import ConfigError
from lct_train.model.config import ModelConfig
from lct_train.train.checkpoint import load_model_weights, read_meta, resolve_checkpoint

SAFETENSORS_FILE = "model.safetensors"
MAX_LISTED = 20
# Model settings that do not change the parameters (may differ between stages).
NON_ARCH_FIELDS = ("attn_backend",)


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def check_keys_and_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                          source: str) -> None:
    """Raises one ``ValueError`` listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k} {found[k]} != model {expected[k]}"
                    for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k]))
    problems = [_listing(t, k) for t, k in (("missing", missing), ("unexpected", unexpected),
                                            ("shape mismatch", shapes)) if k]
    if problems:
        raise ValueError(f"initial weights {source} do not fit the model: " + "; ".join(problems))


def safetensors_path(spec: str) -> Path | None:
    path = Path(spec)
    if path.suffix == ".safetensors":
        return path
    if (path / SAFETENSORS_FILE).is_file():
        return path / SAFETENSORS_FILE
    return None


def load_safetensors(model: nn.Module, path: Path, is_main: bool) -> None:
    if not path.is_file():
        raise ConfigError("stage.init_from", f"{path} does not exist")
    target = get_model_state_dict(model)
    expected = {k: tuple(v.shape) for k, v in target.items()}
    with safe_open(str(path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    check_keys_and_shapes(expected, found, str(path))
    full = {}
    if is_main:
        full = {k: v.to(target[k].dtype) for k, v in load_file(str(path)).items()}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True,
                                                               broadcast_from_rank0=True))


def check_same_architecture(ours: ModelConfig, ckpt: Path) -> None:
    theirs = read_meta(ckpt).get("config", {}).get("model", {})
    mine = ours.to_dict()
    diffs = [f"{k}: checkpoint {theirs.get(k)!r} != run {v!r}" for k, v in mine.items()
             if k not in NON_ARCH_FIELDS and theirs.get(k) != v]
    if diffs:
        raise ConfigError("model", f"does not match the model of {ckpt}: " + "; ".join(diffs))


def resolve_init_checkpoint(stage_cfg) -> Path:
    if stage_cfg.init_from == "auto":
        return resolve_checkpoint(stage_cfg.init_run, "stage.init_run")
    return resolve_checkpoint(stage_cfg.init_from, "stage.init_from")


def init_weights(model: nn.Module, stage_cfg, model_cfg: ModelConfig, is_main: bool) -> str:
    """Loads ``stage.init_from`` into the (sharded) model; returns a description for the log."""
    spec = stage_cfg.init_from
    if spec == "scratch":
        return "scratch (seeded initialisation)"
    st_path = safetensors_path(spec) if spec != "auto" else None
    if st_path is not None:
        load_safetensors(model, st_path, is_main)
        return f"safetensors {st_path}"
    ckpt = resolve_init_checkpoint(stage_cfg)
    check_same_architecture(model_cfg, ckpt)
    try:
        load_model_weights(model, ckpt, stage_cfg.init_weights)
    except Exception as err:  # DCP reports a missing key set with a long traceback
        raise ConfigError("stage.init_weights", f"cannot load `{stage_cfg.init_weights}` "
                          f"weights from {ckpt}: {err}") from err
    return f"checkpoint {ckpt} ({stage_cfg.init_weights} weights)"


@torch.no_grad()
def model_fingerprint(model: nn.Module, device: torch.device, replicas: int = 1) -> float:
    """Sum of every parameter value over the whole model (collective: call on every rank).

    Sums the local shards and all-reduces; ``replicas`` (HSDP replicate degree) undoes the
    double count of replicated shards. Logged at start to make weight hand-offs checkable.
    """
    local = torch.zeros((), dtype=torch.float64, device=device)
    for value in get_model_state_dict(model).values():
        shard = value.to_local() if hasattr(value, "to_local") else value
        local += shard.double().sum()
    dist.all_reduce(local)
    return float(local) / replicas
