"""Loading a model for sampling: a consolidated export or a training DCP step directory.

* consolidated (design §6): ``model.safetensors`` (or ``lct-convert``'s shards + index) and
  ``config.json`` (the ``ModelConfig`` dict), given as the file or the directory;
* DCP: ``<run>/checkpoints/step-N/`` with ``lct_meta.json``; only the ``ema`` or ``model``
  entries are read, in one process (no process group), then copied into a bare ``LCTModel``.

Besides the weights, sampling needs the attention mask the model was trained with and its
context window. A DCP checkpoint records both (``lct_meta.json``: ``mask``, ``data.max_shots``);
a consolidated export does not, so they come from the caller (CLI ``--mask`` / ``--window``),
from the source checkpoint named in ``lct_export.json`` if it still exists, or default to
bidirectional / ``DEFAULT_WINDOW``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.layout import MASKS

META_FILE = "lct_meta.json"
CONFIG_FILE = "config.json"
WEIGHT_SETS = ("ema", "model")
DEFAULT_WINDOW = 9  # SPEC §1: N = 9 shots unless the checkpoint says otherwise
DEFAULT_MASK = "bidirectional"
EXPORT_INFO_FILE = "lct_export.json"


class CheckpointError(ValueError):
    """A checkpoint path that cannot be loaded; the message names the path."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: ModelConfig
    mask: str  # attention mask it was trained with
    window: int  # most shots per forward
    source: str


def load_model(
    path: str | os.PathLike,
    *,
    weights: str = "ema",
    mask: str | None = None,
    window: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Loads a consolidated export or a DCP step directory (module docstring)."""
    path = Path(path)
    if weights not in WEIGHT_SETS:
        raise CheckpointError(f"weights must be one of {WEIGHT_SETS}, got {weights!r}")
    if mask is not None and mask not in MASKS:
        raise CheckpointError(f"mask must be one of {MASKS}, got {mask!r}")
    if path.is_dir() and (path / META_FILE).is_file():
        meta = json.loads((path / META_FILE).read_text())
        resolved = meta.get("config", {})
        if "model" not in resolved:
            raise CheckpointError(f"{path / META_FILE} holds no config.model")
        config = ModelConfig.from_dict(resolved["model"])
        state = _load_dcp(path, weights, config)
        found_mask, found_window = _recorded_mask_and_window(meta)
    else:
        config, state = _load_consolidated(path)
        found_mask, found_window = _export_mask_and_window(path if path.is_dir() else path.parent)
    model = _build(config, state, str(path))
    mask = mask or found_mask or DEFAULT_MASK
    window = int(window or found_window or DEFAULT_WINDOW)
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), config, mask, window,
                       str(path))


def _load_consolidated(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    from lct_train.convert.errors import ConversionError
    from lct_train.convert.safetensors_io import SafetensorsReader

    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(
            f"checkpoint {path}: neither a DCP step directory (no {META_FILE}) nor a "
            f"consolidated export ({config_file} is missing)")
    config = ModelConfig.from_dict(json.loads(config_file.read_text()))
    try:
        reader = SafetensorsReader(path)
        state = reader.load_all()
        reader.close()
    except ConversionError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    return config, state


def _recorded_mask_and_window(meta: dict) -> tuple[str | None, int | None]:
    """Mask and window of a DCP ``lct_meta.json`` (top-level ``mask``, else ``stage.mask``;
    ``data.max_shots``)."""
    config = meta.get("config", {})
    mask = meta.get("mask") or config.get("stage", {}).get("mask")
    window = config.get("data", {}).get("max_shots")
    return (mask if mask in MASKS else None), (window if isinstance(window, int) else None)


def _export_mask_and_window(folder: Path) -> tuple[str | None, int | None]:
    """An export records neither; ``lct_export.json`` names its source checkpoint, whose
    ``lct_meta.json`` does when it is still there."""
    info_file = folder / EXPORT_INFO_FILE
    if not info_file.is_file():
        return None, None
    info = json.loads(info_file.read_text())
    if info.get("mask") in MASKS:  # forward compatible: an export that records them
        return info["mask"], info.get("max_shots")
    meta_file = Path(str(info.get("source", ""))) / META_FILE
    if info.get("source") and meta_file.is_file():
        return _recorded_mask_and_window(json.loads(meta_file.read_text()))
    return None, None


def _build(config: ModelConfig, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    from lct_train.model.mmdit import LCTModel

    model = LCTModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {source} does not match its config: missing "
                              f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model


def _load_dcp(path: Path, weights: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    from lct_train.model.mmdit import LCTModel

    with torch.device("meta"):
        template = LCTModel(config).state_dict()
    state = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in template.items()}
    reader = FileSystemReader(str(path))
    available = set(reader.read_metadata().state_dict_metadata)
    missing = [k for k in state if f"{weights}.{k}" not in available]
    if missing:
        raise CheckpointError(f"DCP checkpoint {path} has no '{weights}' entries for "
                              f"{missing[:8]} (try --weights model)")
    with warnings.catch_warnings():  # one process on purpose: no process group
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({weights: state}, storage_reader=reader, no_dist=True)
    return state
