"""`import-diffusers` / `export-diffusers`: HunyuanVideo and Wan transformer directories <-> LCT
exports.

A diffusers transformer directory holds `config.json` (with `_class_name`, which picks the
family: `lct_train.convert.families`) and
`diffusion_pytorch_model.safetensors` or shards plus their index; a pipeline directory holds it
under `transformer/`. An LCT export holds `config.json` (a `ModelConfig`) and
`model.safetensors` or shards (`family: wan` in a Wan model's config). Both directions check the whole key map on shapes before writing
and stream one shard at a time into a directory renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from lct_train.convert.families import family_of_class, family_of_config
from lct_train.convert.key_plan import convert_with_plan
from lct_train.convert.model_spec import (
    CONFIG_FILE,
    EXPORT_INFO_FILE,
    WEIGHTS_BASE,
    expected_shapes,
    island_keys,
    read_model_config,
)
from lct_train.core.errors import ConversionError, check_keys_and_shapes
from lct_train.core.safetensors_io import DEFAULT_MAX_SHARD_BYTES, SafetensorsReader
from lct_train.model.config import ModelConfig

DIFFUSERS_WEIGHTS_BASE = "diffusion_pytorch_model"
PIPELINE_SUBFOLDER = "transformer"


def diffusers_transformer_dir(path: str | os.PathLike) -> Path:
    """The transformer directory of a diffusers transformer or pipeline directory."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / PIPELINE_SUBFOLDER / CONFIG_FILE).is_file():
        path = path / PIPELINE_SUBFOLDER
    if not (path / CONFIG_FILE).is_file():
        raise ConversionError(f"{path} is not a diffusers model directory (no {CONFIG_FILE})")
    return path


def read_diffusers_config(path: str | os.PathLike) -> dict:
    file = diffusers_transformer_dir(path) / CONFIG_FILE
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{file} is not valid JSON: {err}") from err
    family_of_class(config.get("_class_name"), file)  # refuses other models
    return config


def diffusers_expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of diffusers' own model for `cfg` (built on the meta device)."""
    family = family_of_config(cfg)
    with torch.device("meta"):
        model = family.diffusers_model_class()(**family.config_to_diffusers(cfg))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def import_diffusers(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    base: ModelConfig | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> ModelConfig:
    """diffusers HunyuanVideo or Wan transformer -> LCT export in `out`; returns its config.

    `base` (a config of the same family) supplies the fields diffusers has no notion of (dummy
    grid, attention backend, Wan's shot gap); text RoPE is off in a HunyuanVideo result (turn it
    on for LCT training with `lct-convert init`).
    """
    src_dir = diffusers_transformer_dir(src)
    config = read_diffusers_config(src_dir)
    family = family_of_class(config["_class_name"], src_dir / CONFIG_FILE)
    if base is not None and not isinstance(base, family.config_type):
        raise ConversionError(f"--base-config is a {type(base).__name__}; a diffusers "
                              f"{family.diffusers_class} needs a {family.config_type.__name__}")
    cfg = family.config_from_diffusers(config, base)
    class_name = family.diffusers_class
    with SafetensorsReader(src_dir) as reader:
        check_keys_and_shapes(  # in diffusers' own terms first: what diffusers would load
            reader.shapes(),
            diffusers_expected_shapes(cfg),
            what=f"diffusers checkpoint {src_dir}",
            missing_title=f"keys {class_name} needs but the checkpoint lacks",
            unexpected_title=f"keys {class_name} does not have",
        )
        info = {"source": str(src_dir.resolve()), "format": f"diffusers {class_name}"}
        convert_with_plan(
            family.adapter(cfg).from_diffusers(reader.keys()),
            reader,
            out,
            WEIGHTS_BASE,
            expected=expected_shapes(cfg),
            source_name=f"diffusers checkpoint {src_dir}",
            target_name="the LCT model",
            json_files={CONFIG_FILE: cfg.to_dict(), EXPORT_INFO_FILE: info},
            dtype=dtype,
            max_shard_bytes=max_shard_bytes,
            overwrite=overwrite,
            islands=island_keys(cfg),
        )
    return cfg


def export_diffusers(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> dict:
    """LCT export (`config.json` + `model*.safetensors`) -> diffusers transformer directory.

    Returns the diffusers config written. Warns when the model uses text RoPE: diffusers has
    none, so its output then differs from the LCT model's on a one-shot scene.
    """
    src = Path(src)
    cfg = read_model_config(src)
    family = family_of_config(cfg)
    class_name = family.diffusers_class
    if getattr(cfg, "text_rope", False):
        warnings.warn(
            f"{src} was trained with text RoPE; diffusers {class_name} applies none to "
            "text tokens, so the exported model is not output-equivalent",
            stacklevel=2,
        )
    import diffusers

    dconfig = {
        "_class_name": class_name,
        "_diffusers_version": diffusers.__version__,
        **family.config_to_diffusers(cfg),
    }
    with SafetensorsReader(src) as reader:
        convert_with_plan(
            family.adapter(cfg).to_diffusers(reader.keys()),
            reader,
            out,
            DIFFUSERS_WEIGHTS_BASE,
            expected=diffusers_expected_shapes(cfg),
            source_name=f"LCT export {src}",
            target_name=f"diffusers {class_name}",
            json_files={CONFIG_FILE: dconfig},
            dtype=dtype,
            max_shard_bytes=max_shard_bytes,
            overwrite=overwrite,
            islands=island_keys(cfg),
        )
    return dconfig
