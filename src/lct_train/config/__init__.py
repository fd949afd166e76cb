"""Structured training configs (Hydra schema, composition, validation)."""

from lct_train.config.schema import TrainConfig
from lct_train.config.store import compose_config, one_line_error
from lct_train.core.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "compose_config", "one_line_error"]
