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


def build_synthetic_shards(tmp_path_factory, synth: dict, area: int, name: str = "scenes"):
    """``lct-shards synth`` with ``synth`` (SynthConfig fields) then ``build`` into one-scene
    shards (pixel:2 VAE, tiny text encoder) at pixel ``area``: (dataset dir, ground-truth dir)."""
    from data_tools.build import BuildConfig, build
    from data_tools.synth import SynthConfig, write_synth

    raw = tmp_path_factory.mktemp(f"{name}_synth")
    out = tmp_path_factory.mktemp(name)
    write_synth(SynthConfig(**synth), raw)
    build(BuildConfig(str(raw / "manifest.jsonl"), str(out), vae="pixel:2", text_encoder="tiny",
                      area=area, scenes_per_shard=1))
    return out, raw / "gt"


def one_line(err: str) -> str:
    """The single line of an error output (fails if there are more)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
