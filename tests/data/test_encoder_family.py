"""Each text encoder / codec kind declares the model family it belongs to (HunyuanVideo's and
Wan2.1's encoders have the same widths, so the width checks cannot tell them apart): a
HunyuanVideo-encoded dataset is refused for a Wan model at the training start, ``lct-sample`` of
a Wan export with the HunyuanVideo pipeline and ``lct-shards build --model <wan> --pipeline
<hunyuan>`` refuse with one line; the generic kinds fit both families."""

from __future__ import annotations

import json

import pytest

from data_tools.cli import main as shards_main
from data_tools.model_fit import read_model
from lct_train.convert.cli import main as convert_main
from lct_train.core.errors import ConfigError
from lct_train.data.encoder_family import check_encoder_family
from lct_train.data.schema import DatasetInfo
from tests.data.test_hunyuan_pipeline import _manifest
from tests.testutils import one_line, tiny_config

WAN = read_model("tiny-wan")


def test_generic_kinds_fit_both_families_and_source_kinds_their_own():
    for cfg in (WAN, tiny_config()):
        for text in ("minilm", "tiny", "hf"):
            check_encoder_family(cfg, text, "pixel", source="s", model_name="m")
    check_encoder_family(WAN, "umt5", "wan", source="s", model_name="m")
    check_encoder_family(tiny_config(), "hunyuan-video", "hunyuan", source="s", model_name="m")
    check_encoder_family(tiny_config(), "tiny", "tiny-hunyuan", source="s", model_name="m")
    with pytest.raises(ValueError, match=r"^s is for the wan family \(text encoder tiny, codec tiny-wan2.2\); "
                                         r"m is a mmdit model$"):
        check_encoder_family(tiny_config(), "tiny", "tiny-wan2.2", source="s", model_name="m")


def test_training_refuses_a_hunyuan_encoded_dataset_for_a_wan_model(monkeypatch):
    from lct_train.data import loader
    from lct_train.data.config import DataConfig
    from lct_train.train.batches import LoaderBatches

    info = DatasetInfo(vae={"kind": "hunyuan", "path": "/p/vae"}, text_encoder={"kind": "hunyuan-video"},
                       latent_channels=WAN.latent_channels, text_dim=WAN.text_dim, pooled_dim=32, temporal_factor=4, spatial_factor=8,
                       image_frame="first", fps=24.0, area=1024)

    class Loader:  # the geometry matches the Wan model: only the kinds tell
        def __init__(self, *args, **kwargs):
            self.infos = [info]

    monkeypatch.setattr(loader, "SceneLoader", Loader)
    data = DataConfig(sources=[{"path": "/data/hv"}], patch_size=WAN.patch_size, dummy_grid=WAN.dummy_grid)
    with pytest.raises(ConfigError) as exc:
        LoaderBatches(data, WAN, 0, 1, 1)
    assert str(exc.value) == ("data.sources[0].path: /data/hv is for the mmdit family (text encoder "
                              "hunyuan-video, codec hunyuan); the model is a wan model")
    info.text_encoder, info.vae = {"kind": "tiny"}, {"kind": "pixel"}  # generic kinds pass
    assert LoaderBatches(data, WAN, 0, 1, 1).loader.infos == [info]


@pytest.mark.parametrize("tools", [("--pipeline", "HV"), ("--text-encoder", "tiny", "--codec", "tiny-hunyuan")])
def test_lct_sample_of_a_wan_export_with_hunyuan_encoders_refuses(tools, tiny_wan_pipeline, tiny_hunyuan_pipeline,
                                                                  tmp_path, capsys):
    from lct_train.sample.cli import main as sample

    export = tmp_path / "wan"
    assert convert_main(["import-diffusers", str(tiny_wan_pipeline), str(export)]) == 0
    scene = tmp_path / "scene.yaml"
    scene.write_text(json.dumps({"size": {"height": 32, "width": 32, "frames": 5}, "shots": [{"prompt": "a cat"}]}))
    capsys.readouterr()
    out = tmp_path / "out"
    tools = [str(tiny_hunyuan_pipeline) if t == "HV" else t for t in tools]
    rc = sample(["scene", str(scene), "--ckpt", str(export), "--out", str(out), *tools, "--no-progress"])
    assert rc == 2
    line = one_line(capsys.readouterr().err)
    kinds = "text encoder hunyuan-video, codec hunyuan" if "--pipeline" in tools else "text encoder tiny, codec hunyuan"
    assert f"{' '.join(tools)} is for the mmdit family ({kinds}); --ckpt {export} is a wan model" in line, line
    assert not out.exists()


def test_build_refuses_a_wan_model_for_the_hunyuan_pipeline_before_encoding(
        synth_dir, tmp_path, tiny_hunyuan_pipeline, capsys, monkeypatch):
    from lct_train.data.hunyuan_text import HunyuanVideoTextEncoder

    calls = []
    monkeypatch.setattr(HunyuanVideoTextEncoder, "encode", lambda self, p: calls.append(p))
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path)), str(out), "--pipeline", str(tiny_hunyuan_pipeline),
            "--model", "wan2.1-1.3b", "--area", "1024"]
    assert shards_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert "is for the mmdit family (text encoder hunyuan-video, codec hunyuan); --model wan2.1-1.3b is a " \
           "wan model" in line, line
    assert not out.exists()
    assert calls == []
