"""DCP training checkpoint -> consolidated safetensors (+ `config.json`), streamed.

A checkpoint (design.md §6) is `<run>/checkpoints/step-<N>/`: DCP files whose top-level keys
include `model` and `ema` (FQNs of the bare model, either family), plus `lct_meta.json`. The export reads
the DCP metadata, then loads one output shard's tensors at a time with `dcp.load(no_dist=True)`
(reading only their byte ranges), casts them and writes the shard: peak memory is one shard,
whatever the model size, and no process group is needed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from lct_train.convert.model_spec import (
    CONFIG_FILE,
    EXPORT_INFO_FILE,
    WEIGHTS_BASE,
    cast,
    checkpoint_model_config,
    expected_shapes,
    export_dtype,
    island_keys,
    parse_model_config,
)
from lct_train.core import checkpoint_layout as layout
from lct_train.core.checkpoint_layout import WEIGHT_SETS, run_settings
from lct_train.core.errors import ConversionError, check_keys_and_shapes, format_keys
from lct_train.core.fqn import clean_fqn
from lct_train.core.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    atomic_output_dir,
    plan_shards,
    tensor_nbytes,
    write_json,
    write_sharded,
)


@contextlib.contextmanager
def layout_errors() -> Iterator[None]:
    """Re-raise the checkpoint layout's errors (`checkpoint_layout`) as `ConversionError`."""
    try:
        yield
    except layout.CheckpointLayoutError as err:
        raise ConversionError(str(err)) from err


@dataclass(frozen=True)
class StoredTensor:
    key: str  # the FQN as stored (may carry wrapper prefixes)
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class StoredWeights:
    """One weight set (`ema` / `model`) of a checkpoint, as its DCP metadata describes it."""

    ckpt: Path
    weights: str
    entries: dict[str, StoredTensor]  # bare FQN -> stored tensor, in stored order


def open_weights(path: str | os.PathLike, weights: str | None = None) -> StoredWeights:
    """Resolve the checkpoint (a step, run or `checkpoints/` directory), read its DCP metadata
    once, pick `weights` (None: `ema` when stored, else `model`) and list that set's tensors."""
    with layout_errors():
        ckpt = layout.resolve_checkpoint(path)
        metadata = layout.dcp_metadata(ckpt)
        weights = layout.choose_weights(metadata, weights)
    return StoredWeights(ckpt, weights, tensor_entries(ckpt, metadata, weights))


def tensor_entries(ckpt: Path, metadata, weights: str) -> dict[str, StoredTensor]:
    """Bare FQN -> stored tensor of the top-level key `weights` (of `ckpt`'s DCP `metadata`)."""
    if weights not in WEIGHT_SETS:
        raise ConversionError(f"weights must be one of {WEIGHT_SETS}, got {weights!r}")
    entries: dict[str, StoredTensor] = {}
    tops = set()
    for flat_key, item in metadata.state_dict_metadata.items():
        path = layout.entry_path(metadata, flat_key)
        tops.add(path[0])
        if path[0] != weights:
            continue
        if len(path) != 2 or not isinstance(item, TensorStorageMetadata):
            raise ConversionError(
                f"{ckpt}: `{weights}` entry {flat_key} is not a flat tensor entry"
            )
        name = clean_fqn(path[1])
        if name in entries:  # e.g. `x` and `_orig_mod.x` both stored
            raise ConversionError(f"{ckpt}: {path[1]} and {entries[name].key} are both {name}")
        entries[name] = StoredTensor(path[1], tuple(item.size), item.properties.dtype)
    if not entries:
        others = [w for w in WEIGHT_SETS if w in tops]
        hint = f" (pass weights={others[0]!r} / --weights {others[0]})" if others else ""
        raise ConversionError(
            f"{ckpt} holds no `{weights}` weights; its top-level keys are {sorted(tops)}{hint}"
        )
    return entries


def _load_subset(stored: StoredWeights, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Load `keys` (bare FQNs) of a weight set in their stored dtype, without a process group."""
    entries, weights = stored.entries, stored.weights
    tensors = {entries[k].key: torch.empty(entries[k].shape, dtype=entries[k].dtype) for k in keys}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        try:
            dcp.load(
                {weights: tensors}, storage_reader=FileSystemReader(str(stored.ckpt)), no_dist=True
            )
        except (Exception, CheckpointException) as err:  # truncated or missing .distcp files
            raise ConversionError(
                f"cannot load {len(keys)} `{weights}` tensors from {stored.ckpt}: {err}\n"
                + format_keys("tensors being loaded", keys)
            ) from err
    return {k: tensors[entries[k].key] for k in keys}


def load_dcp_weights(
    path: str | os.PathLike, weights: str | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The whole `weights` set of a checkpoint in memory (for small models and init loading).

    `weights=None`: `ema` when the checkpoint stores it, else `model` (EMA was off).
    """
    stored = open_weights(path, weights)
    return {k: cast(v, dtype) for k, v in _load_subset(stored, list(stored.entries)).items()}


def export_checkpoint(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: str | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    config_overrides: dict | None = None,
) -> Path:
    """DCP checkpoint -> `out/` with `model*.safetensors`, `config.json`, `lct_export.json`.

    Keys and shapes are checked against the checkpoint's `ModelConfig` before anything is
    written; `config_overrides` changes non-shape fields of the exported config (e.g.
    `text_rope`). `weights=None` exports `ema` when stored, else `model`. Returns `out`.
    """
    stored = open_weights(path, weights)
    ckpt, weights, entries = stored.ckpt, stored.weights, stored.entries
    with layout_errors():
        meta = layout.read_meta(ckpt)
        cfg = checkpoint_model_config(meta, ckpt)
    if config_overrides:
        cfg = parse_model_config({**cfg.to_dict(), **config_overrides}, "config overrides")
    check_keys_and_shapes(
        {k: v.shape for k, v in entries.items()},
        expected_shapes(cfg),
        what=f"checkpoint {ckpt} (`{weights}` weights)",
    )
    islands = island_keys(cfg)
    sizes = {
        k: tensor_nbytes(t.shape, export_dtype(dtype, k in islands)
                         if dtype is not None and t.dtype.is_floating_point else t.dtype)
        for k, t in entries.items()
    }
    shards = plan_shards(sizes, max_shard_bytes)

    def produce(keys):
        return {k: cast(v, dtype, k in islands) for k, v in _load_subset(stored, keys).items()}

    info = {
        "source": str(ckpt.resolve()),
        "weights": weights,
        "dtype": str(dtype or "stored"),
        "step": meta.get("step"),
        "git_revision": meta.get("git_revision"),
        **run_settings(meta),  # mask and context window, read by the sampler
    }
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_sharded(tmp, WEIGHTS_BASE, shards, produce)
        write_json(tmp / CONFIG_FILE, cfg.to_dict())
        write_json(tmp / EXPORT_INFO_FILE, info)
    return Path(out)
