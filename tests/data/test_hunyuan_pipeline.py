"""A diffusers HunyuanVideo pipeline folder as the data side uses it (issue 19): the text encoders
exactly as diffusers' ``encode_prompt``, ``lct-shards build --pipeline`` (+ ``--model`` checked
before anything is encoded), ``lct-convert import-diffusers`` and ``lct-sample --pipeline`` from
the same root, and the one-line errors of a folder that cannot be used. All on the tiny random
pipeline of tests/tiny_pipelines.py, fp32 on CPU."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import webdataset as wds
from safetensors.torch import load

from data_tools.cli import main as shards_main
from data_tools.manifest import read_manifest, write_manifest
from lct_train.convert.cli import main as convert_main
from lct_train.data.hunyuan_text import HunyuanVideoTextEncoder, default_template
from lct_train.data.pipeline_dir import load_pipeline
from lct_train.data.schema import DatasetInfo, load_empty_prompt
from lct_train.data.text_encoders import build_text_encoder
from tests.testutils import one_line
from tests.tiny_pipelines import load_diffusers_pipeline

ATOL = 1e-5  # issue 19: fp32 on CPU, max abs diff
LONG = "a cat walks on the grass, realistic, then a red ball rolls across the room " * 12
PROMPTS = ["a cat walks on the grass", "", "[SHOT CUT] The camera pans left to a blue door.", LONG]


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_hunyuan_pipeline):
    return load_diffusers_pipeline(tiny_hunyuan_pipeline)


@pytest.fixture(scope="module")
def encoder(tiny_hunyuan_pipeline):
    return load_pipeline(tiny_hunyuan_pipeline, codec=False)[0]


@pytest.fixture(scope="module")
def export_dir(tiny_hunyuan_pipeline, tmp_path_factory):
    """``lct-convert import-diffusers`` of the pipeline root (its transformer/)."""
    out = tmp_path_factory.mktemp("imported") / "export"
    assert convert_main(["import-diffusers", str(tiny_hunyuan_pipeline), str(out)]) == 0
    return out


def encode_prompt(pipe, prompts):
    """diffusers' valid tokens per prompt and pooled rows (crop_start computed by diffusers)."""
    template = {"template": default_template()["template"], "crop_start": None}
    embeds, pooled, mask = pipe.encode_prompt(prompts, prompt_template=template, device="cpu",
                                              dtype=torch.float32)
    return [embeds[i][mask[i].bool()] for i in range(len(prompts))], pooled


def test_the_tiny_pipeline_is_a_diffusers_hunyuan_video_folder(tiny_hunyuan_pipeline, diffusers_pipe):
    index = json.loads((tiny_hunyuan_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "HunyuanVideoPipeline"
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                 "scheduler"):
        assert (tiny_hunyuan_pipeline / part).is_dir(), part
    assert index["tokenizer"] == ["transformers", "LlamaTokenizerFast"]  # as the real checkpoint
    assert diffusers_pipe.scheduler.config.shift == 7.0
    assert diffusers_pipe.transformer.config.text_embed_dim == diffusers_pipe.text_encoder.config.hidden_size
    assert (diffusers_pipe.transformer.config.pooled_projection_dim
            == diffusers_pipe.text_encoder_2.config.hidden_size)


def test_encode_equals_diffusers_encode_prompt(encoder, diffusers_pipe):
    batch = encoder.encode(PROMPTS)
    tokens, pooled = encode_prompt(diffusers_pipe, PROMPTS)
    # diffusers computes the same crop from the tokenizer; 118 here, not the template's 95
    assert encoder.crop_start == 118
    assert batch.mask.sum(1).tolist() == [t.shape[0] for t in tokens]
    assert batch.mask.sum(1)[3] == 256  # the long prompt: 256 tokens kept, as diffusers keeps
    for i in range(len(PROMPTS)):
        assert (batch.valid(i) - tokens[i]).abs().max() <= ATOL, PROMPTS[i]
    assert batch.pooled.shape == (len(PROMPTS), encoder.pooled_dim)
    assert (batch.pooled - pooled).abs().max() <= ATOL
    # the crop leaves the prompt's own tokens: the first valid token is the prompt's first
    ids = encoder.tokenizer(default_template()["template"].format("a cat"))["input_ids"]
    assert encoder.tokenizer.decode(ids[encoder.crop_start:]) == "a cat<|eot_id|>"
    # batched: the same rows one prompt at a time
    for i in (0, 2):
        alone = encoder.encode([PROMPTS[i]])
        assert (alone.valid(0) - batch.valid(i)).abs().max() <= ATOL


def test_the_llama_tokenizer_keeps_its_tokenizer_json(tiny_hunyuan_pipeline, encoder):
    """transformers 5's LlamaTokenizerFast, the class model_index.json names, would change the
    tokens of a byte-level tokenizer.json; the loader keeps the file's own tokens."""
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizerFast

    text = default_template()["template"].format("A red ball rolls across the room.")
    raw = Tokenizer.from_file(str(tiny_hunyuan_pipeline / "tokenizer" / "tokenizer.json"))
    assert encoder.tokenizer(text)["input_ids"] == raw.encode(text).ids
    assert LlamaTokenizerFast.from_pretrained(tiny_hunyuan_pipeline / "tokenizer")(text)["input_ids"] != raw.encode(text).ids


def test_a_cut_prompt_is_one_warning_line_saying_how(encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="lct_train.data.hunyuan_text"):
        encoder.encode(["a short one", LONG])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    assert "first 256 of its" in lines[0]
    assert "Llama tokens" in lines[0]
    assert "first 77 of its" in lines[0]
    assert "CLIP tokens" in lines[0]


def test_the_llama_cut_starts_where_the_closing_eot_token_is_lost(encoder, caplog):
    fits, cut = "a" + " cat" * 254, "a" + " cat" * 255  # 255 / 256 prompt tokens, + <|eot_id|>
    template = default_template()["template"]
    assert len(encoder.tokenizer(template.format(fits))["input_ids"]) - encoder.crop_start == 256
    with caplog.at_level(logging.WARNING, logger="lct_train.data.hunyuan_text"):
        assert encoder.encode([fits]).mask.sum() == 256
        assert "Llama" not in caplog.text  # (CLIP's 77 tokens are cut in both)
        assert encoder.encode([cut]).mask.sum() == 256
    assert len(caplog.records) == 2
    assert "the first 256 of its 257 Llama tokens" in caplog.records[1].getMessage()


def test_bf16_weights_give_close_conditioning(tiny_hunyuan_pipeline, encoder):
    """The dtype option (bf16 on GPUs; here on CPU): weights in bf16, rows returned in fp32."""
    half, vae = load_pipeline(tiny_hunyuan_pipeline, dtype=torch.bfloat16)
    assert next(half.llama.parameters()).dtype == next(half.clip.parameters()).dtype == torch.bfloat16
    assert next(vae.vae.parameters()).dtype == torch.bfloat16
    assert half.spec()["dtype"] == "bfloat16"
    got, ref = half.encode(PROMPTS[:3]), encoder.encode(PROMPTS[:3])
    assert got.tokens.dtype == got.pooled.dtype == torch.float32
    assert torch.equal(got.mask, ref.mask)
    for i in range(3):
        assert (got.valid(i) - ref.valid(i)).abs().max() <= 0.05 * ref.valid(i).abs().max()


def test_spec_rebuilds_the_same_encoder(encoder):
    spec = encoder.spec()
    assert spec["kind"] == "hunyuan-video"
    again = build_text_encoder(json.loads(json.dumps(spec)))  # as read back from dataset.json
    assert again.spec() == spec
    assert torch.equal(again.encode(PROMPTS[:1]).pooled, encoder.encode(PROMPTS[:1]).pooled)


def _manifest(synth_dir, tmp_path, scenes: int = 2):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [json.loads(s.to_json()) for s in read_manifest(synth_dir / "manifest.jsonl")[:scenes]])
    return manifest


def test_build_pipeline_stores_what_encode_prompt_gives(synth_dir, tmp_path, tiny_hunyuan_pipeline,
                                                        diffusers_pipe, export_dir):
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path)), str(out), "--pipeline", str(tiny_hunyuan_pipeline),
            "--model", str(export_dir), "--area", "1024", "--scenes-per-shard", "1"]
    assert shards_main(args) == 0
    info = DatasetInfo.read(out)
    assert info.text_encoder["kind"] == "hunyuan-video"
    assert info.vae == {"kind": "hunyuan", "path": str(tiny_hunyuan_pipeline / "vae"), "tiling": True}
    assert (info.latent_channels, info.text_dim, info.pooled_dim) == (4, 16, 8)
    samples = list(wds.WebDataset([str(p) for p in sorted((out / "shards").glob("*.tar"))], shardshuffle=False))
    assert len(samples) == 2
    for sample in samples:
        meta, text = json.loads(sample["json"]), load(sample["text.safetensors"])
        prompts = [meta["global_prompt"], *meta["shot_prompts"]]
        tokens, pooled = encode_prompt(diffusers_pipe, prompts)
        for g, ref in enumerate(tokens):
            assert text[f"group_{g}"].shape == ref.shape
            assert (text[f"group_{g}"] - ref).abs().max() <= ATOL
        assert (text["pooled"] - pooled).abs().max() <= ATOL
    empty_tokens, empty_pooled = load_empty_prompt(out)
    ref_tokens, ref_pooled = encode_prompt(diffusers_pipe, [""])
    assert (empty_tokens - ref_tokens[0]).abs().max() <= ATOL
    assert (empty_pooled - ref_pooled[0]).abs().max() <= ATOL


def test_build_takes_a_part_given_separately_over_the_pipelines(synth_dir, tmp_path, tiny_hunyuan_pipeline):
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path, 1)), str(out), "--pipeline", str(tiny_hunyuan_pipeline),
            "--text-encoder", "tiny", "--model", "tiny", "--area", "1024"]
    assert shards_main(args) == 0  # tiny: 4 latent channels as the pipeline's VAE, 32/16 text
    info = DatasetInfo.read(out)
    assert info.text_encoder["kind"] == "tiny"
    assert info.vae["path"] == str(tiny_hunyuan_pipeline / "vae")


@pytest.mark.parametrize(("model", "extra", "named"), [
    ("tiny", [], ["text_dim=16", "text_dim=32", "pooled_dim=8", "pooled_dim=16", "--model tiny"]),
    ("hunyuan-video", [], ["latent_channels=4", "latent_channels=16", "text_dim=4096"]),
    ("EXPORT", ["--patch", "1"], ["--patch 1", "[1, 2, 2]"]),
])
def test_build_refuses_a_model_the_encoders_do_not_fit_before_encoding(
        model, extra, named, synth_dir, tmp_path, tiny_hunyuan_pipeline, export_dir, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(HunyuanVideoTextEncoder, "encode", lambda self, p: calls.append(p))
    out = tmp_path / "ds"
    model = str(export_dir) if model == "EXPORT" else model
    args = ["build", str(_manifest(synth_dir, tmp_path)), str(out), "--pipeline", str(tiny_hunyuan_pipeline),
            "--model", model, "--area", "1024", *extra]
    assert shards_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--pipeline {tiny_hunyuan_pipeline}" in line or "--patch" in line
    for text in named:
        assert text in line, line
    assert not out.exists()  # nothing written
    assert calls == []  # nothing encoded


def test_build_refuses_an_unknown_model(synth_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["build", str(_manifest(synth_dir, tmp_path)), str(out), "--text-encoder", "tiny",
            "--model", "no-such-model"]
    assert shards_main(args) == 2
    assert "no-such-model" in one_line(capsys.readouterr().err)
    assert not out.exists()


def _broken(tiny_hunyuan_pipeline, tmp_path, kind: str):
    root = tmp_path / kind
    if kind == "other":
        root.mkdir()
        (root / "model_index.json").write_text(json.dumps(
            {"_class_name": "CogVideoXPipeline", "vae": ["diffusers", "AutoencoderKLCogVideoX"]}))
    elif kind == "no-index":
        root.mkdir()
    else:
        shutil.copytree(tiny_hunyuan_pipeline, root)
        shutil.rmtree(root / {"no-clip": "text_encoder_2", "no-tokenizer": "tokenizer"}[kind])
    return root


BROKEN = {
    "other": ["CogVideoXPipeline", "not supported by", "--pipeline", "HunyuanVideoPipeline and WanPipeline"],
    "no-index": ["not a diffusers pipeline folder", "model_index.json"],
    "no-clip": ["text_encoder_2 is missing"],
    "no-tokenizer": ["tokenizer is missing", "text_encoder must be beside it"],
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_build_pipeline_errors_are_one_line(kind, synth_dir, tmp_path, tiny_hunyuan_pipeline, capsys):
    root = _broken(tiny_hunyuan_pipeline, tmp_path, kind)
    out = tmp_path / "ds"
    assert shards_main(["build", str(_manifest(synth_dir, tmp_path, 1)), str(out), "--pipeline", str(root)]) == 2
    line = one_line(capsys.readouterr().err)
    for text in BROKEN[kind]:
        assert text in line, line
    assert not out.exists()


def test_text_encoder_kind_refuses_a_tokenizer_not_beside_its_encoder(tiny_hunyuan_pipeline, tmp_path):
    root = _broken(tiny_hunyuan_pipeline, tmp_path, "no-tokenizer")
    with pytest.raises(ValueError, match="must be beside it"):
        build_text_encoder(f"hunyuan-video:{root}")


def test_import_diffusers_takes_the_pipeline_root(export_dir, tiny_hunyuan_pipeline):
    from lct_train.convert.model_spec import read_model_config

    cfg = read_model_config(export_dir)
    transformer = json.loads((tiny_hunyuan_pipeline / "transformer" / "config.json").read_text())
    assert (cfg.latent_channels, cfg.text_dim, cfg.pooled_dim) == (
        transformer["in_channels"], transformer["text_embed_dim"], transformer["pooled_projection_dim"])
    assert json.loads((export_dir / "lct_export.json").read_text())["source"].endswith("transformer")


def test_sample_pipeline_loads_text_encoder_and_codec(tiny_hunyuan_pipeline, export_dir):
    from lct_train.sample.cli import MODEL_DEFAULTS, MODEL_OPTIONS
    from lct_train.sample.toolkit import load_toolkit

    opts = {k: None for k in MODEL_OPTIONS} | MODEL_DEFAULTS
    opts.update(ckpt=str(export_dir), pipeline=str(tiny_hunyuan_pipeline))
    kit = load_toolkit(opts, progress=False)
    assert kit.prompts.encoder.spec()["kind"] == "hunyuan-video"
    assert kit.codec.spec() == {"kind": "hunyuan", "path": str(tiny_hunyuan_pipeline / "vae"), "tiling": True}
    kit = load_toolkit(opts | {"codec": "tiny-hunyuan"}, progress=False)  # a part given separately
    assert kit.codec.spec()["path"] is None


def test_sample_pipeline_of_another_family_is_one_line(tiny_hunyuan_pipeline, export_dir, tmp_path, capsys):
    from lct_train.sample.cli import main as sample_main

    root = _broken(tiny_hunyuan_pipeline, tmp_path, "other")
    scene = tmp_path / "scene.yaml"
    scene.write_text("shots:\n  - prompt: a cat\n    size: {frames: 1, height: 32, width: 32}\n")
    assert sample_main(["scene", str(scene), "--ckpt", str(export_dir), "--pipeline", str(root),
                        "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "CogVideoXPipeline" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
