"""Synthetic scenes (prompts, hidden attributes, ground truth), shot detection, manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.manifest import read_manifest
from data_tools.split import split_video
from data_tools.synth import SynthConfig, write_synth
from data_tools.synth_world import render_frame, sample_world
from lct_train.sample.writers import write_mp4
from tests.data.conftest import TINY_SYNTH


def test_synth_prompts_follow_spec(synth_dir):
    scenes = read_manifest(synth_dir / "manifest.jsonl")
    assert len(scenes) == TINY_SYNTH["num_scenes"]
    kinds = {s.source for s in scenes}
    assert kinds == {"synth-multishot", "synth-segments"}
    for s in scenes:
        assert s.global_prompt.startswith("Character 1: ")
        for shot in s.shots:
            assert shot.rendered_prompt.startswith("[SHOT CUT] ") == (s.source == "synth-multishot")
            assert "Character" in shot.prompt
        if s.source == "synth-segments":
            assert len({sh.path for sh in s.shots}) == 1
            assert all(sh.end > sh.start for sh in s.shots)


def test_hidden_attributes_are_recorded_but_never_prompted(synth_dir, tmp_path):
    from data_tools.synth_world import CHARACTER_COLOURS, TEXTURES

    named = [*CHARACTER_COLOURS, "small", "large", "stripes", "dots", "grid"]
    for scene in read_manifest(synth_dir / "manifest.jsonl"):
        truth = json.loads((synth_dir / "gt" / f"{scene.key}.json").read_text())
        text = " ".join([scene.global_prompt, *(s.prompt for s in scene.shots)]).lower()
        assert not [w for w in named if w in text.split() or f"{w}," in text], text
        assert "characters.rgb" in truth["hidden"]
        for c in truth["characters"]:
            assert c["role"] in scene.global_prompt
            assert c["shape"] in scene.global_prompt
            assert 0.09 <= c["radius"] <= 0.16
            assert c["texture"] in TEXTURES
            assert len(c["rgb"]) == 3
        assert truth["environment"]["pattern"] in ("plain", "grid", "dots")
    described = tmp_path / "described"
    write_synth(SynthConfig(**{**TINY_SYNTH, "hidden": False}), described)
    scene = read_manifest(described / "manifest.jsonl")[0]
    truth = json.loads((described / "gt" / f"{scene.key}.json").read_text())
    assert truth["hidden"] == []
    for c in truth["characters"]:
        assert f"{c['size']} {c['colour']} {c['shape']}" in scene.global_prompt


def test_characters_keep_their_colour_across_framings():
    rng = np.random.default_rng(0)
    chars, env = sample_world(rng, 2)
    pos = {c.index: (0.5, 0.5) for c in chars[:1]}
    wide = render_frame(chars[:1], env, pos, (0.5, 0.5, 1.0), (32, 32))
    close = render_frame(chars[:1], env, pos, (0.5, 0.5, 2.4), (32, 32))
    assert (close == wide[16, 16]).all(axis=-1).mean() > (wide == wide[16, 16]).all(axis=-1).mean()


def test_split_detects_cuts(tmp_path):
    fps, rng = 8.0, np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8).repeat(16, 0) for _ in range(3)]
    video = tmp_path / "long.mp4"
    write_mp4(video, np.concatenate(frames), fps)
    scenes = split_video(video, tmp_path / "m.jsonl", max_shots=2, min_scene_len=4)
    shots = [s for sc in scenes for s in sc["shots"]]
    assert len(scenes) == 2
    assert len(shots) == 3
    assert [round(s["start"]) for s in shots] == [0, 2, 4]
    assert read_manifest(tmp_path / "m.jsonl")[0].shots[0].cut
    still = tmp_path / "still.mp4"
    write_mp4(still, frames[0], fps)
    one = split_video(still, tmp_path / "one.jsonl")
    assert [(s["start"], s["end"]) for s in one[0]["shots"]] == [(0.0, 2.0)]


def test_manifest_errors_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"global_prompt": "g", "shots": [{"path": "a.mp4"}]}\n{"global_prompt": "g"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: 'shots'"):
        read_manifest(path)


def test_cut_marker_helpers():
    from lct_train.data.schema import SHOT_CUT, shot_prompt, strip_cut

    assert shot_prompt("A runs.", cut=True) == SHOT_CUT + "A runs."
    assert shot_prompt("A runs.", cut=False) == "A runs."
    assert shot_prompt(SHOT_CUT + "A runs.", cut=True) == SHOT_CUT + "A runs."  # not doubled
    assert shot_prompt("[SHOT CUT]A runs.", cut=False) == "A runs."
    assert strip_cut(SHOT_CUT + "A runs.") == "A runs."
    assert strip_cut("A [SHOT CUT] runs.") == "A [SHOT CUT] runs."
