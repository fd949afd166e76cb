"""`lct-eval`: the metric passes its own controls, weight-free metrics, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from lct_train.eval.metrics import histogram_intersection, shot_ssim
from lct_train.eval.report import (
    add_shuffled_control,
    interval95,
    score_scene,
    shuffled_shots,
    summarise,
)
from lct_train.eval.scenes import read_eval_manifest, read_truth, shot_frames


def _lct_eval(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lct_train.eval.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_controls_true_scenes_high_shuffled_shots_low(hidden_synth):
    true = _lct_eval(hidden_synth / "manifest.jsonl", "--truth", hidden_synth / "gt")
    assert true.returncode == 0, true.stderr
    last = json.loads(true.stdout.strip().splitlines()[-1])
    assert last["scenes"] == 10
    assert last["hidden_agreement"] >= 0.9
    assert "95% CI" in true.stdout  # the readable table
    assert "synth-000009" in true.stdout
    shuffled = _lct_eval(hidden_synth / "manifest.jsonl", "--truth", hidden_synth / "gt",
                         "--shuffle-shots")
    assert shuffled.returncode == 0, shuffled.stderr
    assert json.loads(shuffled.stdout.strip().splitlines()[-1])["hidden_agreement"] <= 0.5


def test_recoloured_shot_breaks_agreement(hidden_synth):
    """One shot of a scene in other colours: its pairs disagree, the others still agree."""
    scene = read_eval_manifest(hidden_synth / "manifest.jsonl")[0]
    truth = read_truth(hidden_synth / "gt", scene.key)
    shots = [shot_frames(s) for s in scene.shots]
    base = score_scene(shots, truth)
    assert base["hidden_agreement"] == 1.0
    recoloured = [shots[0].flip(-1), *shots[1:]]  # RGB -> BGR
    assert score_scene(recoloured, truth)["room_agreement"] < 1.0


def test_weight_free_metrics_and_condition_fidelity(hidden_synth):
    scene = read_eval_manifest(hidden_synth / "manifest.jsonl")[1]
    shots = [shot_frames(s) for s in scene.shots]
    assert histogram_intersection(shots[0], shots[0]) == 1.0
    assert abs(shot_ssim(shots[0], shots[0]) - 1.0) < 1e-9
    noise = torch.randint(0, 256, shots[0].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert histogram_intersection(shots[0], noise) < 0.3
    assert shot_ssim(shots[0], noise) < 0.3
    scores = score_scene(shots, None, [(), (0,)] + [()] * (len(shots) - 2))
    assert "hidden_agreement" not in scores  # no ground truth: weight-free scores only
    assert scores["condition_palette"] == histogram_intersection(shots[1], shots[0])


def test_interval95_is_a_t_interval():
    mean, lo, hi = interval95([0.0, 1.0])
    assert mean == 0.5
    assert abs(hi - lo - 2 * 12.706 * (0.5**0.5) / 2**0.5) < 1e-9
    assert interval95([0.3]) == (0.3, 0.3, 0.3)


def test_bad_input_is_one_line_exit_2(hidden_synth, tmp_path):
    missing = _lct_eval(hidden_synth / "manifest.jsonl", "--truth", tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "no ground truth" in missing.stderr
    assert "synth-000000.json" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x", "shots": [{"path": "nowhere.mp4"}]}\n{"shots": []}\n')
    result = _lct_eval(bad)
    assert result.returncode == 2
    assert "bad.jsonl:2" in result.stderr
    bad.write_text('{"key": "x", "shots": [{"path": "nowhere.mp4"}]}\n')
    result = _lct_eval(bad)
    assert result.returncode == 2
    assert "nowhere.mp4 does not exist" in result.stderr


def test_noise_and_a_scene_independent_output_earn_nothing(hidden_synth):
    """Noise has no flat room or character colour; a model that draws every scene the same
    agrees with itself, but exactly as much across scenes: no excess over its own chance."""
    scenes = read_eval_manifest(hidden_synth / "manifest.jsonl")
    truths = [read_truth(hidden_synth / "gt", s.key) for s in scenes]
    gen = torch.Generator().manual_seed(0)
    noise = [[torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=gen)
              for _ in s.shots] for s in scenes]
    assert all(score_scene(n, t)["hidden_agreement"] == 0.0 for n, t in zip(noise, truths))
    same = shot_frames(scenes[0].shots[0])  # one true shot, used for every shot of every scene
    copies = [[same for _ in s.shots] for s in scenes]
    scores = [score_scene(c, t) for c, t in zip(copies, truths)]
    add_shuffled_control(scores, [score_scene(c, t) for c, t in zip(shuffled_shots(copies), truths)])
    assert all(s["hidden_excess"] == 0.0 for s in scores)
    assert summarise(scores)["hidden_excess"] == 0.0
