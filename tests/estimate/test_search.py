"""The largest-scene search: its logic on stubbed peak curves, and one real tiny search."""

from __future__ import annotations

import json

import pytest

from lct_train.estimate import search as search_module
from lct_train.estimate.search import largest_fitting, main


def _run(curve, limit, cap):
    calls: list[int] = []

    def peak(n):
        calls.append(n)
        return curve(n)

    found = largest_fitting(peak, limit, cap, {})
    truth = max((n for n in range(1, cap + 1) if curve(n) <= limit), default=0)
    assert found == truth, (found, truth, calls)
    assert len(calls) == len(set(calls)), calls  # never the same estimate twice
    return found, calls


@pytest.mark.parametrize("limit", [72, 100, 126, 127, 300])
def test_linear_curve_is_found_with_the_line_and_verified(limit):
    # 29 GB of states + 4.8 GB per frame (the shape of hunyuan-video at sp=1), in "bytes".
    found, calls = _run(lambda f: 290 + 48 * f, limit * 10, 64)
    # cap, 1, the predicted F*, then F*+1 to verify it: no bisection.
    assert calls[:2] == [64, 1]
    assert len(calls) <= 4, calls
    assert found in calls
    assert found + 1 in calls


def test_nonlinear_curve_falls_back_and_still_finds_the_edge():
    found, calls = _run(lambda f: 10 + f ** 3, 20_000, 64)
    assert found == 27
    # cap and 1, two verified line rounds, then a bisection of what is left of 1..64.
    assert len(calls) <= 2 + 2 * 2 + 6, calls


@pytest.mark.parametrize(("jump_at", "truth"), [(10, 9), (7, 6)])
def test_wrong_prediction_is_caught_by_the_verification(jump_at, truth):
    # Linear plus a step: the line through F=1 and F=64 predicts F*=10 for the limit.
    curve = lambda f: 100 + 10 * f + (50 if f >= jump_at else 0)  # noqa: E731
    found, calls = _run(curve, 210, 64)
    assert found == truth
    assert calls[2] == 10  # the prediction, refused by its own estimate
    assert truth in calls
    assert truth + 1 in calls
    assert len(calls) <= 6, calls


def test_nothing_fits_and_everything_fits():
    assert _run(lambda f: 1000 + f, 999, 64) == (0, [64, 1])
    assert _run(lambda f: 1000 + f, 10**6, 64) == (64, [64])  # one estimate: ">= cap"
    assert _run(lambda f: 5, 5, 1) == (1, [1])


def test_shared_estimates_are_not_repeated():
    seen: dict[int, int] = {}
    calls: list[int] = []

    def peak(n):
        calls.append(n)
        return 290 + 48 * n

    small = largest_fitting(peak, 720, 64, seen)
    first = len(calls)
    big = largest_fitting(peak, 1269, 64, seen)
    assert (small, big) == (8, 20)
    assert 64 not in calls[first:]
    assert 1 not in calls[first:]


TINY = ["model=tiny", "estimate.frame=[4,4]", "estimate.text_len=16", "estimate.world_size=2"]


def _stub_search(monkeypatch, gpu_gb, capsys):
    """``search`` over the real configs with a stubbed estimate: (2 + shots x frames) x 0.1 GB."""
    calls = []

    def peak(self, run_args, frame, frames, shots, limits):
        calls.append((frames, shots))
        self.calls.append({"frames": frames, "shots": shots, "seconds": 0.0})
        return int((2 + shots * frames) * 1e8)

    monkeypatch.setattr(search_module.Searcher, "peak", peak)
    result = search_module.search([*TINY, f"estimate.gpu_gb={gpu_gb}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["rows"] == result["rows"]
    (row,) = result["rows"]
    return row, out[-2], calls


def test_search_rows_frames_then_shots_then_nothing(monkeypatch, capsys):
    # 9 GB usable: 9 shots x F fits while 2 + 9 F <= 90, i.e. F <= 9.
    row, text, calls = _stub_search(monkeypatch, 10, capsys)
    assert (row["shots"], row["frames"], row["at_cap"]) == (9, 9, False)
    assert row["tokens"] == 9 * (9 * 16 + 16) + 16 + 4  # + the global group (4 dummy + text)
    assert row["peak_bytes"] == 83e8
    assert "9 shots x 9 latent frames" in text
    assert len(calls) == len(set(calls)) <= 4
    # 0.9 GB usable: not even F=1 (1.1 GB); the largest shot count at F=1 is 7.
    row, text, calls = _stub_search(monkeypatch, 1, capsys)
    assert (row["shots"], row["frames"]) == (7, 0)
    assert "7 shots x 1 latent frames" in text
    assert all(f == 1 for f, s in calls if s != 9)
    # 0.18 GB usable: not one shot of one frame (0.3 GB).
    row, text, _ = _stub_search(monkeypatch, 0.2, capsys)
    assert row["shots"] == 0
    assert row["peak_bytes"] is None
    assert row["smallest"] == {"tokens": 16 + 16 + 16 + 4, "peak_bytes": 3e8}
    assert "nothing fits: 1 shot of 1 latent frame (52 tokens) needs 0.3 GB" in text


def test_real_search_two_presets_share_one_estimate(capsys):
    """The real estimator, tiny model: 80 and 141 GB compose to the same run apart from the
    token budget, so one estimate (the cap, which fits both) answers both rows."""
    assert main([*TINY, "search.max_frames=2", "estimate.shots=2",
                 "search.memory=[80gb,141gb]"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    (call,) = result["estimates"]
    (line,) = [line for line in out if line.startswith("estimate ")]
    assert line.startswith("estimate 1: 2 shots x 2x4x4, 116 tokens: peak ")
    assert "fits 80gb, fits 141gb" in line
    assert call["frames"] == 2
    assert call["peak_bytes"] > 0
    assert [r["memory"] for r in result["rows"]] == ["80gb", "141gb"]
    for row, gb in zip(result["rows"], (80, 141)):
        assert row["at_cap"]
        assert row["frames"] == 2
        assert row["shots"] == 2
        assert row["usable_bytes"] == 0.9 * gb * 1e9
        assert row["peak_bytes"] == call["peak_bytes"]
        assert row["tokens"] == call["tokens"] == 2 * (2 * 16 + 16) + 16 + 4


@pytest.mark.parametrize(("args", "key"), [
    (["estimate.tokens=800"], "estimate.tokens"),
    (["search.max_frames=0"], "search.max_frames"),
    (["search.max_frame=3"], "search.max_frame"),
    (["search.start=[0]"], "search.start"),
    (["parallel.sp_degree=3"], "parallel.sp_degree"),
])
def test_bad_keys_name_the_key(args, key, capsys):
    assert main([*TINY, "estimate.gpu_gb=1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert key in err, err
