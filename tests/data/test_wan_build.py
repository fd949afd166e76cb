"""``lct-shards build --pipeline <WanPipeline folder>`` end to end (issue 20): the shards hold
diffusers' ``encode_prompt`` rows trimmed to the valid tokens and no pooled vector, the latents
of the pipeline's VAE normalised per channel; ``--model`` refuses a model the Wan encoders do
not fit before encoding; the training loader reads the shards and the tiny Wan model (imported
from the same root) runs on its batch. Also ``lct-sample --pipeline`` on a Wan root."""

from __future__ import annotations

import json

import pytest
import torch
import webdataset as wds
from safetensors.torch import load

from data_tools.cli import main as shards_main
from lct_train.convert.cli import main as convert_main
from lct_train.convert.model_spec import read_model_config
from lct_train.data.codecs import build_codec
from lct_train.data.schema import DatasetInfo, load_empty_prompt
from lct_train.data.wan_text import UMT5TextEncoder
from tests.data.test_hunyuan_pipeline import _manifest
from tests.data.test_wan_text import encode_prompt
from tests.testutils import one_line

ATOL = 1e-5


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_wan_pipeline):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(str(tiny_wan_pipeline))


@pytest.fixture(scope="module")
def export_dir(tiny_wan_pipeline, tmp_path_factory):
    """``lct-convert import-diffusers`` of the Wan pipeline root (its transformer/)."""
    out = tmp_path_factory.mktemp("wan_imported") / "export"
    assert convert_main(["import-diffusers", str(tiny_wan_pipeline), str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def built(synth_dir, tmp_path_factory, tiny_wan_pipeline, export_dir):
    tmp = tmp_path_factory.mktemp("wan_build")
    out = tmp / "ds"
    args = ["build", str(_manifest(synth_dir, tmp)), str(out), "--pipeline", str(tiny_wan_pipeline),
            "--model", str(export_dir), "--area", "1024", "--scenes-per-shard", "1"]
    assert shards_main(args) == 0
    return out


def test_build_pipeline_stores_what_wan_encode_prompt_gives(built, tiny_wan_pipeline, diffusers_pipe):
    info = DatasetInfo.read(built)
    assert info.text_encoder["kind"] == "umt5"
    assert info.vae == {"kind": "wan", "path": str(tiny_wan_pipeline / "vae"), "tiling": True}
    assert (info.latent_channels, info.text_dim, info.pooled_dim) == (16, 16, 0)
    assert (info.temporal_factor, info.spatial_factor, info.image_frame) == (4, 8, "first")
    codec = build_codec(info.vae)
    samples = list(wds.WebDataset([str(p) for p in sorted((built / "shards").glob("*.tar"))], shardshuffle=False))
    assert len(samples) == 2
    for sample in samples:
        meta, text = json.loads(sample["json"]), load(sample["text.safetensors"])
        prompts = [meta["global_prompt"], *meta["shot_prompts"]]
        ref, lengths = encode_prompt(diffusers_pipe, prompts)
        for g, n in enumerate(lengths):
            assert text[f"group_{g}"].shape == (n, 16)
            assert (text[f"group_{g}"] - ref[g, :n]).abs().max() <= ATOL
        assert text["pooled"].shape == (len(prompts), 0)
        latents = load(sample["latents.safetensors"])
        assert all(z.shape[0] == 16 for z in latents.values())
    # the stored latents are the codec's normalised ones: they decode with the pipeline's path
    assert codec.decode(next(iter(latents.values()))).shape[1] == 3
    empty_tokens, empty_pooled = load_empty_prompt(built)
    ref, lengths = encode_prompt(diffusers_pipe, [""])
    assert (empty_tokens - ref[0, : lengths[0]]).abs().max() <= ATOL
    assert empty_pooled.shape == (0,)


def test_verify_and_inspect_read_a_dataset_without_pooled_vectors(built, export_dir, capsys):
    assert shards_main(["verify", str(built)]) == 0
    assert "2 good, 0 bad samples" in capsys.readouterr().out
    assert shards_main(["inspect", str(built), "--dummy-grid", "0,0,0", "--json"]) == 0
    by_flags = json.loads(capsys.readouterr().out)
    assert shards_main(["inspect", str(built), "--model", str(export_dir), "--json"]) == 0
    by_model = json.loads(capsys.readouterr().out)  # the model's patch and (empty) dummy grid
    assert by_model == by_flags
    assert by_model["dummy_grid"] == [0, 0, 0]


def test_the_training_loader_reads_the_shards_and_the_model_runs(built, export_dir):
    from lct_train.data.config import DataConfig
    from lct_train.model.family import build_model
    from lct_train.train.batches import LoaderBatches

    cfg = read_model_config(export_dir)
    assert (cfg.family, cfg.latent_channels, cfg.text_dim, cfg.pooled_dim) == ("wan", 16, 16, 0)
    data = DataConfig(sources=[{"path": str(built)}], max_tokens=4096, num_workers=0, shuffle_buffer=2,
                      packing_lookahead=2, p_drop_global=0.5, p_drop_shot=0.5, patch_size=cfg.patch_size,
                      dummy_grid=cfg.dummy_grid)
    batches = LoaderBatches(data, cfg, 0, 1, 1)  # checks dataset.json's geometry against the model
    mb = batches.next_step(0)[0]
    assert mb.video.shape[1] == cfg.patch_dim
    assert mb.text.shape[1] == cfg.text_dim
    assert mb.pooled.shape == (sum(len(s.groups) for s in mb.specs), 0)
    meta = cfg.build_meta(mb.specs)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(mb.video, mb.text, None, torch.full((meta.num_groups,), 0.5), meta)
    assert out.shape == mb.video.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("model", "named"), [
    ("hunyuan-video", ["text_dim=16", "text_dim=4096", "pooled_dim=0", "pooled_dim=768"]),
    ("wan2.2-ti2v-5b", ["latent_channels=16", "latent_channels=48", "text_dim=4096"]),
])
def test_build_refuses_a_model_the_wan_encoders_do_not_fit_before_encoding(
        model, named, synth_dir, tmp_path, tiny_wan_pipeline, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(UMT5TextEncoder, "encode", lambda self, p: calls.append(p))
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path)), str(out), "--pipeline", str(tiny_wan_pipeline),
            "--model", model, "--area", "1024"]
    assert shards_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--pipeline {tiny_wan_pipeline}" in line
    for text in named:
        assert text in line, line
    assert not out.exists()
    assert calls == []


def test_build_help_documents_every_kind(capsys):
    with pytest.raises(SystemExit):
        shards_main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for kind in ("umt5:DIR", "wan:PATH", "tiny-wan2.2", "hunyuan-video:DIR", "hunyuan:PATH", "WanPipeline", "--vae-dtype",
                 "wan2.2-ti2v-5b"):
        assert kind in text, kind


def test_sample_pipeline_loads_the_wan_text_encoder_and_codec(tiny_wan_pipeline, export_dir):
    from lct_train.sample.cli import MODEL_DEFAULTS, MODEL_OPTIONS
    from lct_train.sample.toolkit import pipeline_parts

    opts = {k: None for k in MODEL_OPTIONS} | MODEL_DEFAULTS
    opts.update(ckpt=str(export_dir), pipeline=str(tiny_wan_pipeline))
    encoder, codec = pipeline_parts(opts, "cpu")
    assert encoder.spec()["kind"] == "umt5"
    assert encoder.pooled_dim == 0
    assert codec.spec() == {"kind": "wan", "path": str(tiny_wan_pipeline / "vae"), "tiling": True}


def test_data_config_takes_no_dummy_grid_for_a_text_only_global_group():
    from lct_train.core.errors import ConfigError
    from lct_train.data.config import DataConfig

    assert DataConfig(sources=[{"path": "x"}], dummy_grid=(0, 0, 0)).dummy_grid == (0, 0, 0)
    with pytest.raises(ConfigError, match=r"data.dummy_grid.*\(0, 0, 0\) for none"):
        DataConfig(sources=[{"path": "x"}], dummy_grid=(0, 1, 1))


def test_build_from_a_wan22_pipeline_gives_48_channel_latents(synth_dir, tmp_path, tiny_wan22_pipeline):
    export = tmp_path / "export"
    assert convert_main(["import-diffusers", str(tiny_wan22_pipeline), str(export)]) == 0
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path, 1)), str(out), "--pipeline", str(tiny_wan22_pipeline),
            "--model", str(export), "--area", "1024"]
    assert shards_main(args) == 0
    info = DatasetInfo.read(out)
    assert (info.latent_channels, info.spatial_factor, info.text_dim, info.pooled_dim) == (48, 16, 16, 0)
    sample = next(iter(wds.WebDataset([str(p) for p in sorted((out / "shards").glob("*.tar"))],
                                      shardshuffle=False)))
    latents = load(sample["latents.safetensors"])
    assert all(z.shape[0] == 48 and z.shape[2:] == (2, 2) for z in latents.values())  # 32x32 / 16


def test_build_encoders_keep_the_wan_vae_fp32_unless_vae_dtype(tiny_wan_pipeline):
    """lct-shards build --dtype bf16: the umT5 in bf16, the Wan VAE in fp32 (its family's);
    --vae-dtype bf16 names the VAE's; a bad one is refused naming the flag."""
    from data_tools.build import BuildConfig, _encoders

    codec, text = _encoders(BuildConfig("m", "o", pipeline=str(tiny_wan_pipeline), dtype="bf16"))
    assert {p.dtype for p in text.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in codec.vae.parameters()} == {torch.float32}
    codec, _ = _encoders(BuildConfig("m", "o", pipeline=str(tiny_wan_pipeline), text_encoder="tiny",
                                     vae_dtype="bf16"))
    assert {p.dtype for p in codec.vae.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="--vae-dtype"):
        BuildConfig("m", "o", vae_dtype="auto")


@pytest.mark.gpu
def test_pipeline_encoders_on_cuda_in_bf16_are_close_to_fp32_cpu(tiny_wan_pipeline):
    """The device path of a build (--device cuda, --dtype auto = bf16): each rank's encoders on
    its own GPU give what fp32 on CPU gives, at bf16 tolerance."""
    from data_tools.build import BuildConfig, _encoders
    from tests.data.test_wan_text import PROMPTS

    def encoders(device):
        return _encoders(BuildConfig("m", "o", pipeline=str(tiny_wan_pipeline), device=device))

    (codec, text), (ref_codec, ref_text) = encoders("cuda:0"), encoders("cpu")
    assert next(text.model.parameters()).dtype == torch.bfloat16
    assert {p.dtype for p in codec.vae.parameters()} == {torch.float32}  # Wan's VAE: fp32
    got, ref = text.encode(PROMPTS), ref_text.encode(PROMPTS)
    assert torch.equal(got.mask, ref.mask)
    for i in range(len(PROMPTS)):
        assert (got.valid(i) - ref.valid(i)).abs().max() <= 0.05 * ref.valid(i).abs().max()
    x = torch.rand(2, 5, 3, 32, 48) * 2 - 1
    for z, r in zip(codec.encode_batch(x), ref_codec.encode_batch(x)):
        assert (z - r).abs().max() <= 0.05 * r.abs().max()
