"""The time grid, the resolution shift rule and the per-shot seeded noise."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lct_train.sample.schedule import (
    MAX_SHIFT,
    SD3_REFERENCE_SHIFT,
    SD3_REFERENCE_TOKENS,
    resolution_shift,
    sampling_timesteps,
    shot_noise,
)


def test_grid_runs_from_noise_to_data_and_the_shift_moves_it_towards_noise():
    plain = sampling_timesteps(4, 1.0)
    assert plain == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = sampling_timesteps(4, 3.0)
    assert shifted[0] == 1.0
    assert shifted[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(shifted))
    assert shifted[2] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    assert all(s >= p for s, p in zip(shifted, plain))


def test_resolution_shift_rule():
    assert resolution_shift(SD3_REFERENCE_TOKENS) == pytest.approx(SD3_REFERENCE_SHIFT)
    assert resolution_shift(4 * SD3_REFERENCE_TOKENS) == pytest.approx(2 * SD3_REFERENCE_SHIFT)
    assert resolution_shift(1) == 1.0
    assert resolution_shift(10**9) == MAX_SHIFT
    assert math.isclose(resolution_shift(1000), math.sqrt(1000 * 9 / 4096))


@pytest.mark.parametrize(("steps", "shift"), [(0, 1.0), (3, 0.0)])
def test_bad_grid_arguments(steps, shift):
    with pytest.raises(ValueError, match=r"steps|shift"):
        sampling_timesteps(steps, shift)


def test_shot_noise_is_a_function_of_the_seed_with_two_distinct_draws():
    a, b = shot_noise(7, (2, 3), torch.float32), shot_noise(7, (2, 3), torch.float32)
    assert torch.equal(a.initial, b.initial)
    assert torch.equal(a.condition, b.condition)
    assert not torch.equal(a.initial, a.condition)
    assert not torch.equal(a.initial, shot_noise(8, (2, 3), torch.float32).initial)
    # the same stream in any dtype
    wide = shot_noise(7, (2, 3), torch.float64)
    torch.testing.assert_close(wide.initial.float(), a.initial)
