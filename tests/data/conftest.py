"""Fixtures for the data tests: one tiny synthetic dataset rendered, encoded and sharded once."""

from __future__ import annotations

import pytest

from data_tools.build import BuildConfig, build
from data_tools.synth import SynthConfig, write_synth
from lct_train.data.config import DataConfig

TINY_SYNTH = dict(num_scenes=12, min_shots=1, max_shots=4, min_frames=2, max_frames=4, height=32, width=32,
                  fps=8.0, p_continuous=0.3, max_characters=2, seed=3)
TINY_AREA = 32 * 32


def build_tiny(manifest, out, **kw) -> dict:
    opts = dict(vae="pixel:2", text_encoder="tiny", fps=8.0, area=TINY_AREA, patch=2, scenes_per_shard=1)
    opts.update(kw)
    return build(BuildConfig(str(manifest), str(out), **opts))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth(SynthConfig(**TINY_SYNTH), out)
    return out


@pytest.fixture(scope="session")
def dataset_dir(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    build_tiny(synth_dir / "manifest.jsonl", out)
    return out


@pytest.fixture
def make_cfg(dataset_dir):
    def make(**kw) -> DataConfig:
        opts = dict(sources=[{"path": str(dataset_dir)}], max_tokens=1024, num_workers=0, shuffle_buffer=4,
                    packing_lookahead=4, p_drop_global=0.0, p_drop_shot=0.0)
        opts.update(kw)
        return DataConfig(**opts)

    return make
