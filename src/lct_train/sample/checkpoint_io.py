"""Loading a model for sampling: a consolidated export or a training DCP step directory.

* consolidated (design §6): ``model.safetensors`` (or ``lct-convert``'s shards + index) and
  ``config.json`` (the ``ModelConfig`` dict), given as the file or the directory;
* DCP: ``<run>/checkpoints/step-N/`` with ``lct_meta.json`` (or the run directory: its newest
  valid step); only the ``ema`` or ``model`` entries are read, in one process (no process
  group, ``lct_train.convert.dcp_export``), then copied into a bare model of the config's
  family (``model.family``: the MMDiT's ``LCTModel``, or ``WanModel`` for ``family: wan``).
  By default ``ema``, or ``model`` when the checkpoint has no EMA. A ``finetune=lora`` run's checkpoint
  holds adapters only: its recorded base is read and the adapters merged into it
  (``lct_train.convert.lora_export.merged_run_state``);
* ``lora=FILE``: a diffusers LoRA file (``lct-convert export-lora`` or another trainer's)
  merged on top of either, times ``lora_scale``.

Besides the weights, sampling needs the attention mask the model was trained with and its
context window. A DCP checkpoint records both (``lct_meta.json``: ``mask``, ``data.max_shots``);
an export of one (``lct-convert export`` / ``init``) copies them into ``lct_export.json``. The
caller (CLI ``--mask`` / ``--window``) overrides them; an export without them falls back to the
source checkpoint named in its ``lct_export.json`` if it still exists, else to bidirectional /
``DEFAULT_WINDOW``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lct_train.convert.model_spec import EXPORT_INFO_FILE, checkpoint_model_config
from lct_train.core import checkpoint_layout as layout
from lct_train.core.checkpoint_layout import META_FILE, WEIGHT_SETS
from lct_train.data.config import DEFAULT_MAX_SHOTS
from lct_train.model import family
from lct_train.model.config import ModelConfig
from lct_train.model.layout import MASKS
from lct_train.model.precision import cast_model
from lct_train.model.wan.config import WanConfig

DEFAULT_WINDOW = DEFAULT_MAX_SHOTS  # the training window (SPEC §1) unless the checkpoint says otherwise
DEFAULT_MASK = "bidirectional"


class CheckpointError(ValueError):
    """A checkpoint path that cannot be loaded; the message names the path."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: ModelConfig | WanConfig
    mask: str  # attention mask it was trained with
    window: int  # most shots per forward
    source: str


def load_model(
    path: str | os.PathLike,
    *,
    weights: str | None = None,
    mask: str | None = None,
    window: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    lora: str | os.PathLike | None = None,
    lora_scale: float = 1.0,
) -> LoadedModel:
    """Loads a consolidated export or a DCP checkpoint (module docstring); ``weights=None``:
    ``ema`` when the checkpoint stores it, else ``model``. A LoRA run's checkpoint is its base
    with its adapters merged; ``lora``: a diffusers LoRA file merged on top, times
    ``lora_scale``."""
    path = Path(path)
    if weights is not None and weights not in WEIGHT_SETS:
        raise CheckpointError(f"weights must be one of {WEIGHT_SETS}, got {weights!r}")
    if mask is not None and mask not in MASKS:
        raise CheckpointError(f"mask must be one of {MASKS}, got {mask!r}")
    if layout.holds_checkpoint(path):
        path = layout.resolve_checkpoint(path)
        meta = _read_meta(path)
        try:
            config = checkpoint_model_config(meta, path)
        except layout.CheckpointLayoutError as exc:
            raise CheckpointError(str(exc)) from exc
        state = _load_lora_run(path, weights) if "lora" in meta else _load_dcp(path, weights)
        found_mask, found_window = _recorded_mask_and_window(meta)
    else:
        config, state = _load_consolidated(path)
        found_mask, found_window = _export_mask_and_window(path if path.is_dir() else path.parent)
    if lora is not None:
        _merge_lora_file(state, lora, lora_scale, config)
    model = _build(config, state, str(path))
    mask = mask or found_mask or DEFAULT_MASK
    window = int(window or found_window or DEFAULT_WINDOW)
    return LoadedModel(cast_model(model.to(device), dtype).eval(), config, mask, window,
                       str(path))


def _load_consolidated(path: Path) -> tuple[ModelConfig | WanConfig, dict[str, torch.Tensor]]:
    from lct_train.convert.model_spec import config_file, read_model_config
    from lct_train.core.errors import ConversionError
    from lct_train.core.safetensors_io import SafetensorsReader

    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not config_file(path).is_file():
        raise CheckpointError(
            f"checkpoint {path}: neither a DCP step directory (no {META_FILE}) nor a "
            f"consolidated export ({config_file(path)} is missing)")
    try:
        config = read_model_config(path)
        with SafetensorsReader(path) as reader:
            state = reader.load_all()
    except ConversionError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    return config, state


def _read_meta(ckpt: Path) -> dict:
    try:
        return layout.read_meta(ckpt)
    except layout.CheckpointLayoutError as exc:
        raise CheckpointError(str(exc)) from exc


def _recorded_mask_and_window(meta: dict) -> tuple[str | None, int | None]:
    """Mask and window of a DCP ``lct_meta.json`` (``checkpoint_layout.run_settings``)."""
    found = layout.run_settings(meta)
    mask, window = found.get("mask"), found.get("max_shots")
    return (mask if mask in MASKS else None), (window if isinstance(window, int) else None)


def _export_mask_and_window(folder: Path) -> tuple[str | None, int | None]:
    """Mask and window recorded in an export's ``lct_export.json``, else in the ``lct_meta.json``
    of the source checkpoint it names, when that is still there."""
    info_file = folder / EXPORT_INFO_FILE
    if not info_file.is_file():
        return None, None
    info = json.loads(info_file.read_text())
    if info.get("mask") in MASKS:  # recorded by `lct-convert export`
        return info["mask"], info.get("max_shots")
    source = Path(str(info.get("source", "")))
    if info.get("source") and layout.is_checkpoint(source):
        return _recorded_mask_and_window(_read_meta(source))
    return None, None


def _build(config: ModelConfig | WanConfig, state: dict[str, torch.Tensor],
           source: str) -> torch.nn.Module:
    # on the meta device: no throw-away initialisation of a possibly 14B model
    model = family.build_model(config, "meta")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {source} does not match its config: missing "
                              f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model


def _load_lora_run(path: Path, weights: str | None) -> dict[str, torch.Tensor]:
    from lct_train.convert.lora_export import merged_run_state
    from lct_train.core.errors import ConversionError

    if weights not in (None, "model"):
        raise CheckpointError(f"LoRA checkpoint {path} holds adapters (`model`), no `{weights}`")
    try:
        return merged_run_state(path, _read_tensors)[1]
    except ConversionError as exc:
        raise CheckpointError(str(exc)) from exc


def _read_tensors(path) -> dict[str, torch.Tensor]:
    from lct_train.core.safetensors_io import SafetensorsReader

    with SafetensorsReader(path) as reader:
        return reader.load_all()


def _merge_lora_file(state: dict[str, torch.Tensor], lora, scale: float, config) -> None:
    """Merges a diffusers LoRA file into ``state``, its names and shapes read through the
    state-dict adapter of ``config``'s family."""
    from lct_train.convert.lora_export import lora_keymap, merge_into_state, read_diffusers_lora
    from lct_train.core.errors import ConversionError

    try:
        adapters, rank, alpha = read_diffusers_lora(lora, lora_keymap(config))
        merge_into_state(state, adapters, scale * alpha / rank, f"LoRA file {lora}")
    except ConversionError as exc:
        raise CheckpointError(str(exc).splitlines()[0]) from exc


def _load_dcp(path: Path, weights: str | None) -> dict[str, torch.Tensor]:
    from lct_train.convert.dcp_export import load_dcp_weights
    from lct_train.core.errors import ConversionError

    try:
        return load_dcp_weights(path, weights)
    except ConversionError as exc:
        raise CheckpointError(f"DCP checkpoint {path}: {exc}") from exc
