"""Helpers shared by the test packages: the repository paths and the tiny model config.

Imported as ``from tests.testutils import ...`` (the one import style of the tests: absolute from
the repository root, which ``python -m pytest`` and ``tests/train/torchrun.env`` put on the path).
"""

from __future__ import annotations

from pathlib import Path

from lct_train.model.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "conf" / "model"


def tiny_config(**overrides) -> ModelConfig:
    """The ``tiny`` preset (dual, single and refiner blocks), with ``overrides``."""
    cfg = ModelConfig.from_yaml(PRESETS / "tiny.yaml")
    return ModelConfig.from_dict({**cfg.to_dict(), **overrides}) if overrides else cfg
