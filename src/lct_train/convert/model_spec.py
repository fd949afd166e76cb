"""What a converted checkpoint must contain: a `ModelConfig`'s parameter names and shapes.

The model is built on the meta device, so asking for the shapes of a 13B model costs no memory.
Also reads and writes the `config.json` of a consolidated export (design.md §6).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lct_train.core.checkpoint_layout import META_FILE, BadMetaError
from lct_train.core.dtypes import CONVERT_DTYPES, dtype_of
from lct_train.core.errors import ConversionError
from lct_train.model import family
from lct_train.model.config import ModelConfig
from lct_train.model.precision import island_names
from lct_train.model.wan.config import WanConfig

CONFIG_FILE = "config.json"
EXPORT_INFO_FILE = "lct_export.json"  # provenance of an export (source, weights, mask, window)
WEIGHTS_BASE = "model"  # model.safetensors / model-0000i-of-0000N.safetensors


def build_model(cfg: ModelConfig | WanConfig, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The bare model of `cfg`'s family (`lct_train.model.family`)."""
    return family.build_model(cfg, device)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter (and persistent buffer) name -> shape of `cfg`'s bare model (either family)."""
    model = build_model(cfg, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def parse_model_config(data: dict, source: str) -> ModelConfig | WanConfig:
    """A `ModelConfig`, or a `WanConfig` when ``family: wan`` (`lct_train.model.family`)."""
    try:
        return family.config_from_dict(data)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{source}: not a valid ModelConfig: {err}") from err


def config_file(path: str | os.PathLike) -> Path:
    """The `config.json` that describes `path`: an export directory's, a weights file's
    (the `config.json` in its folder), or `path` itself when it is a `.json` file."""
    path = Path(path)
    if path.is_dir():
        return path / CONFIG_FILE
    return path if path.suffix == ".json" else path.parent / CONFIG_FILE


def read_config_json(path: str | os.PathLike) -> tuple[Path, dict]:
    """(the `config_file` of `path`, its JSON object); raises `ConversionError` naming it."""
    file = config_file(path)
    if not file.is_file():
        raise ConversionError(
            f"no model config for {path}: {file} does not exist (an export holds {CONFIG_FILE} "
            "next to its weights)"
        )
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConversionError(f"{file} does not hold a JSON object")
    return file, data


def checkpoint_model_config(meta: dict, ckpt: str | os.PathLike) -> ModelConfig | WanConfig:
    """The model config (of its family) recorded in a checkpoint's ``lct_meta.json`` under
    ``config.model`` (the resolved run config the trainer writes); ``BadMetaError`` naming the
    file when absent or invalid."""
    file = Path(ckpt) / META_FILE
    config = meta.get("config")
    data = config.get("model") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        raise BadMetaError(f"{file} holds no model config (config.model)")
    try:
        return family.config_from_dict(data)
    except (TypeError, ValueError) as err:
        raise BadMetaError(f"{file}: config.model is not a valid model config: {err}") from err


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of an export: given its directory, a weights file in it, or its
    `config.json` (`config_file`)."""
    file, data = read_config_json(path)
    if "_class_name" in data:
        raise ConversionError(
            f"{file} is a diffusers config ({data['_class_name']}), not an lct-train ModelConfig; "
            "convert it with `lct-convert import-diffusers` first"
        )
    return parse_model_config(data, str(file))


def parse_dtype(name: str | None) -> torch.dtype | None:
    """`bf16`/`fp16`/`fp32` (or torch names) -> dtype; None keeps the stored dtype."""
    if name is None:
        return None
    if name not in CONVERT_DTYPES:
        raise ConversionError(f"unknown dtype {name!r}; choose one of {sorted(CONVERT_DTYPES)}")
    return dtype_of(name)


def island_keys(cfg: ModelConfig | WanConfig) -> frozenset[str]:
    """The keys of `cfg`'s model kept in fp32 (`lct_train.model.precision`: Wan's timestep
    embedder, modulation tables and block norms; none for HunyuanVideo), from a meta model."""
    return frozenset(island_names(build_model(cfg, device="meta")))


def export_dtype(dtype: torch.dtype | None, island: bool = False) -> torch.dtype | None:
    """The dtype an export casts a floating tensor to: ``dtype`` (None: the stored one), fp32
    for an fp32 island, as diffusers' ``save_pretrained`` keeps them."""
    return torch.float32 if island and dtype is not None else dtype


def cast(tensor: torch.Tensor, dtype: torch.dtype | None, island: bool = False) -> torch.Tensor:
    """Cast floating-point tensors only (an fp32 island to fp32, `export_dtype`); integer
    buffers keep their dtype."""
    dtype = export_dtype(dtype, island)
    if dtype is None or not tensor.is_floating_point():
        return tensor
    return tensor.to(dtype)
