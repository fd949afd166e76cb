"""A small hidden-attribute synthetic set, rendered once for the eval tests."""

from __future__ import annotations

import pytest

from data_tools.synth import SynthConfig, write_synth

EVAL_SYNTH = dict(num_scenes=10, min_shots=2, max_shots=3, min_frames=2, max_frames=3, height=32,
                  width=32, fps=6.0, p_continuous=0.3, max_characters=2, seed=5)


@pytest.fixture(scope="session")
def hidden_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("hidden_synth")
    write_synth(SynthConfig(**EVAL_SYNTH), out)
    return out
