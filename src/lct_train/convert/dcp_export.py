"""DCP training checkpoint -> consolidated safetensors (+ `config.json`), streamed.

A checkpoint (design.md §6) is `<run>/checkpoints/step-<N>/`: DCP files whose top-level keys
include `model` and `ema` (FQNs of the bare `LCTModel`), plus `lct_meta.json`. The export reads
the DCP metadata, then loads one output shard's tensors at a time with `dcp.load(no_dist=True)`
(reading only their byte ranges), casts them and writes the shard: peak memory is one shard,
whatever the model size, and no process group is needed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from lct_train.convert.errors import ConversionError, check_keys_and_shapes, format_keys
from lct_train.convert.model_spec import (
    CONFIG_FILE,
    WEIGHTS_BASE,
    cast,
    expected_shapes,
    parse_model_config,
)
from lct_train.convert.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    atomic_output_dir,
    plan_shards,
    tensor_nbytes,
    write_json,
    write_sharded,
)
from lct_train.model.config import ModelConfig

META_FILE = "lct_meta.json"
STEP_PREFIX = "step-"
WEIGHT_SETS = ("ema", "model")  # the top-level DCP keys that hold model weights
EXPORT_INFO_FILE = "lct_export.json"
# module-wrapper path parts that are not part of the bare model's FQNs
WRAPPER_PARTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def holds_checkpoint(path: str | os.PathLike) -> bool:
    """True for a step directory, a `checkpoints/` directory or a run directory holding one."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    return is_checkpoint(path) or any(is_checkpoint(p) for p in root.glob(f"{STEP_PREFIX}*"))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A step directory as is; a run or `checkpoints/` directory -> its latest complete step."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = sorted(
        (p for p in root.glob(f"{STEP_PREFIX}*") if is_checkpoint(p)),
        key=lambda p: (
            int(p.name.removeprefix(STEP_PREFIX)) if p.name[len(STEP_PREFIX) :].isdigit() else -1
        ),
    )
    if not steps:
        raise ConversionError(
            f"{path} is not a training checkpoint: no {META_FILE} in it, and no complete "
            f"{STEP_PREFIX}* directory under {root}"
        )
    return steps[-1]


def read_meta(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / META_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{ckpt / META_FILE} is not valid JSON: {err}") from err


def model_config_of(meta: dict, ckpt: Path) -> ModelConfig:
    """The `ModelConfig` in `lct_meta.json`: under `config.model` (resolved run config) or `model`."""
    config = meta.get("config")
    data = config.get("model") if isinstance(config, dict) else None
    data = data if data is not None else meta.get("model")
    if not isinstance(data, dict):
        raise ConversionError(
            f"{ckpt / META_FILE} holds no model config (looked for `config.model` and `model`)"
        )
    return parse_model_config(data, str(ckpt / META_FILE))


@dataclass(frozen=True)
class StoredTensor:
    key: str  # the FQN as stored (may carry wrapper prefixes)
    shape: tuple[int, ...]
    dtype: torch.dtype


def bare_fqn(key: str) -> str:
    """The bare `LCTModel` FQN: drops compile / activation-checkpoint / FSDP1 wrapper parts."""
    return ".".join(part for part in key.split(".") if part not in WRAPPER_PARTS)


def run_settings(meta: dict) -> dict:
    """The stage's attention mask and context window (`data.max_shots`) of `lct_meta.json`.

    Recorded in `lct_export.json` so that the sampler can use an export without its run.
    """
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    stage, data = config.get("stage") or {}, config.get("data") or {}
    found = {"mask": meta.get("mask") or stage.get("mask"), "max_shots": data.get("max_shots")}
    return {k: v for k, v in found.items() if v is not None}


def tensor_entries(ckpt: Path, weights: str) -> dict[str, StoredTensor]:
    """Bare FQN -> stored tensor of the top-level key `weights`, in stored order."""
    if weights not in WEIGHT_SETS:
        raise ConversionError(f"weights must be one of {WEIGHT_SETS}, got {weights!r}")
    try:
        metadata = FileSystemReader(str(ckpt)).read_metadata()
    except Exception as err:  # DCP raises plain exceptions for missing/corrupt .metadata
        raise ConversionError(f"cannot read the DCP metadata of {ckpt}: {err}") from err
    entries: dict[str, StoredTensor] = {}
    tops = set()
    for flat_key, item in metadata.state_dict_metadata.items():
        path = metadata.planner_data.get(flat_key, tuple(flat_key.split(".", 1)))
        tops.add(path[0])
        if path[0] != weights:
            continue
        if len(path) != 2 or not isinstance(item, TensorStorageMetadata):
            raise ConversionError(
                f"{ckpt}: `{weights}` entry {flat_key} is not a flat tensor entry"
            )
        name = bare_fqn(path[1])
        if name in entries:
            raise ConversionError(f"{ckpt}: {path[1]} and {entries[name].key} are both {name}")
        entries[name] = StoredTensor(path[1], tuple(item.size), item.properties.dtype)
    if not entries:
        raise ConversionError(
            f"{ckpt} holds no `{weights}` weights; its top-level keys are {sorted(tops)}"
        )
    return entries


def _load_subset(
    ckpt: Path, weights: str, entries: dict[str, StoredTensor], keys: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Load `keys` (bare FQNs) of the `weights` set in their stored dtype, without a process group."""
    stored = {entries[k].key: torch.empty(entries[k].shape, dtype=entries[k].dtype) for k in keys}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        try:
            dcp.load({weights: stored}, storage_reader=FileSystemReader(str(ckpt)), no_dist=True)
        except (Exception, CheckpointException) as err:  # truncated or missing .distcp files
            raise ConversionError(
                f"cannot load {len(keys)} `{weights}` tensors from {ckpt}: {err}\n"
                + format_keys("tensors being loaded", keys)
            ) from err
    return {k: stored[entries[k].key] for k in keys}


def load_dcp_weights(
    path: str | os.PathLike, weights: str = "ema", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The whole `weights` set of a checkpoint in memory (for small models and init loading)."""
    ckpt = resolve_checkpoint(path)
    entries = tensor_entries(ckpt, weights)
    return {
        k: cast(v, dtype) for k, v in _load_subset(ckpt, weights, entries, list(entries)).items()
    }


def export_checkpoint(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: str = "ema",
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    config_overrides: dict | None = None,
) -> Path:
    """DCP checkpoint -> `out/` with `model*.safetensors`, `config.json`, `lct_export.json`.

    Keys and shapes are checked against the checkpoint's `ModelConfig` before anything is
    written; `config_overrides` changes non-shape fields of the exported config (e.g.
    `text_rope`). Returns `out`.
    """
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    cfg = model_config_of(meta, ckpt)
    if config_overrides:
        cfg = parse_model_config({**cfg.to_dict(), **config_overrides}, "config overrides")
    entries = tensor_entries(ckpt, weights)
    check_keys_and_shapes(
        {k: v.shape for k, v in entries.items()},
        expected_shapes(cfg),
        what=f"checkpoint {ckpt} (`{weights}` weights)",
    )
    sizes = {
        k: tensor_nbytes(
            t.shape, dtype if dtype is not None and t.dtype.is_floating_point else t.dtype
        )
        for k, t in entries.items()
    }
    shards = plan_shards(sizes, max_shard_bytes)

    def produce(keys):
        return {k: cast(v, dtype) for k, v in _load_subset(ckpt, weights, entries, keys).items()}

    info = {
        "source": str(ckpt.resolve()),
        "weights": weights,
        "dtype": str(dtype or "stored"),
        "step": meta.get("step"),
        "git_revision": meta.get("git_revision"),
        **run_settings(meta),
    }
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_sharded(tmp, WEIGHTS_BASE, shards, produce)
        write_json(tmp / CONFIG_FILE, cfg.to_dict())
        write_json(tmp / EXPORT_INFO_FILE, info)
    return Path(out)
