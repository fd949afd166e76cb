"""``model_from=PATH``: the run's model config read from an export's config.json or a training
checkpoint's lct_meta.json instead of a ``model=`` preset; ``model.*`` overrides still apply;
every unusable PATH is a one-line error naming ``model_from`` (exit 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lct_train.config.store import compose_config, one_line_error
from lct_train.core.checkpoint_layout import META_FILE, step_name
from lct_train.model.config import ModelConfig
from lct_train.train.main import main
from tests.testutils import one_line

# No preset has this: 3 heads of 8, 3 latent channels, guidance embedding, sampling defaults.
ODD = dataclasses.replace(
    ModelConfig.from_yaml("conf/model/tiny.yaml"), num_heads=3, head_dim=8, rope_axes_dim=(2, 2, 4),
    latent_channels=3, text_dim=12, pooled_dim=6, guidance_embeds=True, text_rope=False,
    dummy_grid=(1, 1, 2), sampling={"steps": 20, "embedded_guidance": 6.0, "shift": 7.0})


@pytest.fixture
def export(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ODD.to_dict()))
    (folder / "model.safetensors").write_bytes(b"")  # named only: its config.json is read
    return folder


def test_a_wan_export_config_replaces_the_preset(tmp_path):
    from lct_train.model.wan.config import WanConfig

    wan = WanConfig.from_yaml("conf/model/tiny-wan.yaml")
    (tmp_path / "config.json").write_text(json.dumps({**wan.to_dict(), "num_layers": 3}))
    cfg = compose_config([f"model_from={tmp_path}", "model.shot_gap=2"])
    assert cfg.model == dataclasses.replace(wan, num_layers=3, shot_gap=2)
    assert cfg.data.dummy_grid == (0, 0, 0)  # a Wan global group is text only


def test_the_export_config_replaces_the_preset(export):
    for spec in (export, export / "config.json", export / "model.safetensors"):
        cfg = compose_config([f"model_from={spec}"])
        assert cfg.model == ODD
        assert cfg.data.dummy_grid == (1, 1, 2)  # the data geometry follows it too


def test_command_line_model_overrides_apply_on_top(export):
    cfg = compose_config([f"model_from={export}", "model.attn_backend=reference",
                          "model.sampling.shift=5.0", "model.rope_theta=100.0"])
    assert cfg.model == dataclasses.replace(ODD, attn_backend="reference", rope_theta=100.0,
                                            sampling={**ODD.sampling.__dict__, "shift": 5.0})


def test_a_training_checkpoint_gives_its_recorded_model(tmp_path):
    run = tmp_path / "run"
    for step, heads in ((2, 2), (4, 3)):  # the newest checkpoint of a run directory
        ckpt = run / "checkpoints" / step_name(step)
        ckpt.mkdir(parents=True)
        model = dataclasses.replace(ODD, num_heads=heads).to_dict()
        (ckpt / META_FILE).write_text(json.dumps({"config": {"model": model}}))
    assert compose_config([f"model_from={run}"]).model.num_heads == 3
    assert compose_config([f"model_from={run / 'checkpoints' / step_name(2)}"]).model.num_heads == 2


def _diffusers(folder):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "HunyuanVideoTransformer3DModel"}))


def _bad_json(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{not json")


def _no_model(folder):
    (folder / "checkpoints" / step_name(1)).mkdir(parents=True)
    (folder / "checkpoints" / step_name(1) / META_FILE).write_text(json.dumps({"config": {}}))


@pytest.mark.parametrize(("make", "words"), [
    (None, "does not exist"),
    (lambda f: f.mkdir(), "neither a training checkpoint nor an export"),
    (_diffusers, "lct-convert import-diffusers"),
    (_bad_json, "is not valid JSON"),
    (_no_model, "holds no model config"),
])
def test_unusable_paths_are_one_line_naming_model_from(tmp_path, make, words):
    folder = tmp_path / "src"
    if make:
        make(folder)
    with pytest.raises(Exception) as info:
        compose_config([f"model_from={folder}"])
    message = one_line_error(info.value)
    assert message.startswith("model_from: "), message
    assert words in message, message


def test_a_preset_beside_it_is_refused_at_the_cli(export, capsys):
    assert main([f"model_from={export}", "model=tiny", "--cfg"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "model_from: replaces the model= preset: drop model=tiny" in line
    assert main([f"model_from={export}", "--cfg"]) == 0
    assert "num_heads: 3" in capsys.readouterr().out
