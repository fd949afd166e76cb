"""Turns the composed config's ``model`` and ``data`` nodes into the owning packages' dataclasses
(running their ``__post_init__`` checks), with errors that name the key.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from lct_train.core.errors import ConfigError
from lct_train.data.config import DataConfig
from lct_train.model.config import ModelConfig


def model_config(cfg: DictConfig) -> ModelConfig:
    try:
        return ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    except (TypeError, ValueError) as err:
        # ModelConfig names the field as "ModelConfig.<field> must be ..."
        match = re.match(r"ModelConfig\.(\w+) (.*)", str(err), flags=re.S)
        if match:
            raise ConfigError(f"model.{match.group(1)}", match.group(2)) from err
        raise ConfigError("model", str(err)) from err


def data_config(cfg: DictConfig) -> DataConfig:
    """The loader config; its geometry always follows the model (design.md §3)."""
    raw = OmegaConf.to_container(cfg.data, resolve=True)
    model = model_config(cfg)
    raw["patch_size"] = list(model.patch_size)
    raw["dummy_grid"] = list(model.dummy_grid)
    try:
        return DataConfig(**raw)
    except (TypeError, ValueError) as err:
        message = str(err)
        key = message.split(":", 1)[0] if message.startswith("data.") else "data"
        raise ConfigError(key, message.split(": ", 1)[-1]) from err
