"""Initial weights of a run: stage-1 init from safetensors, causal-FT init from a stage-1 checkpoint.

`load_init_weights(path, model)` gives the full initial state dict in one process (tools, tests,
single-process runs; the FSDP trainer, `lct_train.train.init_weights`, makes the same check on
every rank from the headers and reads the tensors on rank 0 only). `path` is a consolidated
export (`model.safetensors` or a sharded directory, e.g. written by `lct-convert
import-diffusers` / `export`) or a DCP training checkpoint (by default its `ema` weights, or its
`model` weights when it has no EMA). The result is checked strictly against the model: every
missing, unexpected or mis-shaped key is listed in one error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from lct_train.convert.dcp_export import (
    load_dcp_weights,
    model_config_of,
    pick_weights,
    read_meta,
    resolve_checkpoint,
)
from lct_train.convert.errors import ConversionError, check_keys_and_shapes
from lct_train.convert.model_spec import CONFIG_FILE, cast, expected_shapes, read_model_config
from lct_train.convert.safetensors_io import SafetensorsReader
from lct_train.model.config import ModelConfig
from lct_train.train.checkpoint_layout import holds_checkpoint

Expected = torch.nn.Module | ModelConfig | Mapping[str, tuple[int, ...]]


def _expected_shapes(expected: Expected) -> dict[str, tuple[int, ...]]:
    if isinstance(expected, torch.nn.Module):  # DTensor shapes are global shapes
        return {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    if isinstance(expected, ModelConfig):
        return expected_shapes(expected)
    return {k: tuple(v) for k, v in expected.items()}


def load_init_weights(
    path: str | os.PathLike,
    expected: Expected,
    *,
    weights: str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU state dict from `path`, checked against `expected`.

    `expected` is the model (FSDP-sharded is fine), its `ModelConfig`, or a name -> shape map.
    `weights` picks `ema` or `model` when `path` is a DCP checkpoint; the default (None) takes
    `ema` when the checkpoint stores it and `model` otherwise (a run with EMA off). With FSDP, load it on
    every rank (or rank 0 with `broadcast_from_rank0`) and apply it with
    `set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))`.
    """
    path = Path(path)
    if holds_checkpoint(path):
        ckpt = resolve_checkpoint(path)
        weights = pick_weights(ckpt, weights)
        state = load_dcp_weights(ckpt, weights=weights, dtype=dtype)
        source = f"checkpoint {ckpt} (`{weights}` weights)"
    elif path.exists():
        with SafetensorsReader(path) as reader:
            state = {k: cast(v, dtype) for k, v in reader.load_all().items()}
        source = f"safetensors {path}"
    else:
        raise ConversionError(f"initial weights not found: {path}")
    check_keys_and_shapes(
        {k: tuple(v.shape) for k, v in state.items()}, _expected_shapes(expected), what=source
    )
    return state


def read_init_config(path: str | os.PathLike) -> ModelConfig | None:
    """The `ModelConfig` stored with initial weights, or None when the source has none."""
    path = Path(path)
    if holds_checkpoint(path):
        ckpt = resolve_checkpoint(path)
        return model_config_of(read_meta(ckpt), ckpt)
    config = path / CONFIG_FILE if path.is_dir() else path.parent / CONFIG_FILE
    return read_model_config(config) if config.is_file() else None
