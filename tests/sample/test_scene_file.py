"""Scene-file parsing: a full example in YAML and JSON, and errors that name the culprit."""

from __future__ import annotations

import json

import pytest

from lct_train.sample.scene_file import SceneFileError, ShotSize, load_scene_file, parse_scene

SCENE = {
    "global_prompt": "Character 1: a fox. [Environment] snow. [Story] it hunts.",
    "mode": "ar-kv",
    "steps": 4,
    "guidance": 2.0,
    "t_c": 0.2,
    "seed": 10,
    "size": {"frames": 3, "height": 16, "width": 16},
    "shots": [
        {"prompt": "Character 1 sits.", "condition": "ref.png"},
        {"prompt": "[SHOT CUT] Character 1 runs.", "seed": 3},
        {"prompt": "Character 1 keeps running.", "cut": False, "context": [1, 0],
         "size": {"frames": 1, "height": 8, "width": 16}},
    ],
}


def _write(tmp_path, data, name="scene.yaml"):
    (tmp_path / "ref.png").write_bytes(b"not read at parse time")
    path = tmp_path / name
    path.write_text(json.dumps(data))  # JSON is valid YAML too
    return path


@pytest.mark.parametrize("name", ["scene.yaml", "scene.json"])
def test_a_full_scene_parses(tmp_path, name):
    request = load_scene_file(_write(tmp_path, SCENE, name))
    assert request.mode == "ar-kv"
    assert request.steps == 4
    assert request.t_c == 0.2
    first, second, third = request.shots
    assert first.condition == tmp_path / "ref.png"
    assert first.is_condition
    assert first.seed == 10
    assert second.seed == 3
    assert third.seed == 12
    assert second.full_prompt == "[SHOT CUT] Character 1 runs."  # marker not doubled
    assert third.full_prompt == "Character 1 keeps running."  # extension: no marker
    assert third.context == (1, 0)
    assert third.size == ShotSize(1, 8, 16)
    assert [s.is_condition for s in request.shots] == [True, False, False]


def test_mode_aliases():
    data = {**SCENE, "mode": "conditioned", "shots": [{"prompt": "a", "size": SCENE["size"]}]}
    assert parse_scene(data).mode == "joint"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "sideways"}, r"mode 'sideways' is not one of"),
        ({"stpes": 3}, r"unknown key\(s\) \['stpes'\]"),
        ({"t_c": 1.5}, r"t_c must be in \[0, 1\)"),
        ({"steps": 0}, r"steps must be >= 1"),
        ({"guidance": "high"}, r"guidance must be a number"),
        ({"negative_prompt": 3}, r"negative_prompt must be a string"),
        ({"shots": []}, r"'shots' must be a non-empty list"),
        ({"size": {"frames": 1, "height": 8}}, r"size must be a mapping with exactly"),
    ],
)
def test_scene_level_errors(tmp_path, change, message):
    with pytest.raises(SceneFileError, match=message) as err:
        load_scene_file(_write(tmp_path, {**SCENE, **change}))
    assert "scene.yaml" in str(err.value)


@pytest.mark.parametrize(
    ("shot", "message"),
    [
        ({"prompt": "x", "context": [2]}, r"shots\[1\]\.context \[2\] must name earlier shots"),
        ({"prompt": "x", "context": [0, 0]}, r"shots\[1\]\.context \[0, 0\] repeats"),
        ({"prompt": "x", "condition": "missing.mp4"}, r"shots\[1\]\.condition .* does not exist"),
        ({"prompt": "[SHOT CUT] x", "cut": False}, r"shots\[1\]: prompt starts with"),
        ({"prompt": "x", "colour": "red"}, r"shots\[1\]: unknown key\(s\) \['colour'\]"),
        ({"prompt": 3}, r"shots\[1\]\.prompt must be a string"),
        ({"prompt": "x", "noise": 3}, r"shots\[1\]\.noise must be a file path"),
        ({"prompt": "x", "noise": "z.safetensors", "condition": "ref.png"},
         r"shots\[1\]: noise starts a generated shot"),
    ],
)
def test_shot_level_errors(tmp_path, shot, message):
    data = {**SCENE, "shots": [SCENE["shots"][1], shot]}
    with pytest.raises(SceneFileError, match=message):
        load_scene_file(_write(tmp_path, data))


def test_context_is_rejected_in_joint_mode():
    data = {**SCENE, "mode": "joint", "shots": [{"prompt": "a"}, {"prompt": "b", "context": [0]}]}
    with pytest.raises(SceneFileError, match=r"shots\[1\]\.context is only used by the ar"):
        parse_scene(data)


def test_a_shot_without_size_or_condition_is_an_error():
    data = {"shots": [{"prompt": "a"}]}
    with pytest.raises(SceneFileError, match=r"shots\[0\] has neither a size"):
        parse_scene(data)


def test_nothing_to_generate_is_an_error(tmp_path):
    data = {**SCENE, "shots": [SCENE["shots"][0]]}
    with pytest.raises(SceneFileError, match="nothing to generate"):
        load_scene_file(_write(tmp_path, data))


def test_unparsable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("shots: [unclosed")
    with pytest.raises(SceneFileError, match=r"bad\.yaml: cannot parse"):
        load_scene_file(bad)
    with pytest.raises(SceneFileError, match="does not exist"):
        load_scene_file(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SceneFileError, match="top level must be a mapping"):
        load_scene_file(listing)


def test_global_prompt_and_sampling_settings_left_out(tmp_path):
    """No global_prompt: no global group (None), unlike an empty one; settings left out are
    None (the model preset's, else the sampler's defaults); noise paths are relative to the
    scene file (checked against the latent shape when the scene is planned)."""
    data = {"size": SCENE["size"], "shots": [{"prompt": "a", "noise": "z0.safetensors"}]}
    request = load_scene_file(_write(tmp_path, data))
    assert request.global_prompt is None
    assert (request.steps, request.guidance, request.embedded_guidance, request.shift) == (
        None, None, None, None)
    assert request.shots[0].noise == tmp_path / "z0.safetensors"
    assert parse_scene({**data, "global_prompt": ""}).global_prompt == ""
    assert request.negative_prompt is None
    assert parse_scene({**data, "negative_prompt": ""}).negative_prompt == ""
