"""``model_from=PATH``: the run's model config read from the weights it starts from instead of a
``model=`` preset, so an import whose architecture is no preset (a checkpoint at its own width,
the tiny test pipeline) trains without typing every ``model.*`` key.

PATH is a consolidated export (its folder, a weights file in it, or its ``config.json``: what
``lct-convert import-diffusers`` / ``export`` write) or a training checkpoint (a ``step-N`` or run
directory: the ``config.model`` its ``lct_meta.json`` records). The file's config replaces the
preset whole (architecture, dummy grid, the source model's sampling defaults); ``model.KEY=V``
overrides on the command line still apply on top of it. Errors name ``model_from``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import OmegaConf

from lct_train.core import checkpoint_layout as layout
from lct_train.core.errors import ConfigError

KEY = "model_from"
CONFIG_FILE = "config.json"  # an export's model config (convert.model_spec.CONFIG_FILE)


def _fail(message: str) -> ConfigError:
    return ConfigError(KEY, message)


def recorded_model_config(spec: str) -> dict[str, Any]:
    """The model config dict recorded at ``spec`` (module docstring)."""
    path = Path(spec)
    if not path.exists():
        raise _fail(f"{spec} does not exist (expected an export folder, its config.json or a "
                    "training checkpoint / run directory)")
    if layout.holds_checkpoint(path):
        try:
            ckpt = layout.resolve_checkpoint(path, KEY)
            config = layout.read_meta(ckpt).get("config")
        except layout.CheckpointLayoutError as err:
            raise _fail(str(err).removeprefix(f"{KEY}: ")) from err
        source = ckpt / layout.META_FILE
        data = config.get("model") if isinstance(config, dict) else None
    else:
        source = path / CONFIG_FILE if path.is_dir() else (
            path if path.suffix == ".json" else path.parent / CONFIG_FILE)
        if not source.is_file():
            raise _fail(f"{spec} is neither a training checkpoint nor an export: {source} does "
                        "not exist")
        try:
            data = json.loads(source.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _fail(f"{source} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise _fail(f"{source} holds no model config")
    if "_class_name" in data:
        raise _fail(f"{source} is a diffusers config ({data['_class_name']}); import it first: "
                    f"lct-convert import-diffusers {spec} EXPORT_DIR")
    return data  # either family's (``family``: `lct_train.model.family`, checked when built)


def model_from_deferred(overrides: Sequence[str]) -> list[str]:
    """The overrides Hydra composes: with ``model_from=`` on the command line its ``model.*``
    overrides wait for ``apply_model_from`` (they may name keys only the recorded model's family
    has, e.g. a Wan model's ``shot_gap`` over the default MMDiT preset)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    if not any(o.key_or_group == KEY and o.value() for o in parsed):
        return list(overrides)
    return [text for text, o in zip(overrides, parsed) if not o.key_or_group.startswith("model.")]


def apply_model_from(container: dict, overrides: Sequence[str]) -> None:
    """Replaces ``container['model']`` (the composed config, plain containers) by the config
    ``container['model_from']`` names, then replays the ``model.*`` command-line overrides."""
    spec = container.get(KEY)
    if not spec:
        return
    model = OmegaConf.create(recorded_model_config(spec))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "model":
            raise _fail(f"replaces the model= preset: drop model={override.value()}")
        if not key.startswith("model."):
            continue
        if override.type == OverrideType.DEL:
            raise _fail(f"cannot delete {key} from the model config of {spec}")
        OmegaConf.update(model, key.removeprefix("model."), override.value(), merge=True)
    container["model"] = OmegaConf.to_container(model)
