"""Wan's umT5 text conditioning (issue 20): ``umt5`` / a WanPipeline folder's text encoder gives
exactly diffusers' ``WanPipeline.encode_prompt`` rows, trimmed to each prompt's valid tokens; no
pooled vector. On the tiny random Wan pipeline of tests/tiny_pipelines.py, fp32 on CPU."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from lct_train.data.pipeline_dir import load_pipeline
from lct_train.data.text_encoders import build_text_encoder
from lct_train.data.wan_text import UMT5_MAX_LENGTH, prompt_clean

ATOL = 1e-5  # issue 20: fp32 on CPU, max abs diff
LONG = "a cat walks on the grass, realistic, then a red ball rolls across the room " * 40
PROMPTS = ["a cat walks on the grass", "", "A  red &amp; blue\tball\n rolls &lt;left&gt;.  ",
           "[SHOT CUT] The camera pans left to a blue door.", LONG]


@pytest.fixture(scope="module")
def diffusers_pipe(tiny_wan_pipeline):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(str(tiny_wan_pipeline))


@pytest.fixture(scope="module")
def encoder(tiny_wan_pipeline):
    return load_pipeline(tiny_wan_pipeline, codec=False)[0]


def encode_prompt(pipe, prompts):
    """diffusers' rows (zero-padded to 512) and each prompt's valid length."""
    embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                   max_sequence_length=UMT5_MAX_LENGTH, device="cpu", dtype=torch.float32)
    ids = pipe.tokenizer([prompt_clean(p) for p in prompts], padding="max_length", truncation=True,
                         max_length=UMT5_MAX_LENGTH, return_tensors="pt")["attention_mask"]
    return embeds, ids.sum(1).tolist()


def test_the_tiny_pipeline_is_a_diffusers_wan_folder(tiny_wan_pipeline, diffusers_pipe):
    index = json.loads((tiny_wan_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_wan_pipeline / part).is_dir(), part
    assert index["tokenizer"] == ["transformers", "T5TokenizerFast"]  # as Wan-AI's checkpoints
    assert type(diffusers_pipe.text_encoder).__name__ == "UMT5EncoderModel"
    assert diffusers_pipe.transformer.config.text_dim == diffusers_pipe.text_encoder.config.d_model
    assert diffusers_pipe.transformer.config.in_channels == diffusers_pipe.vae.config.z_dim == 16
    assert diffusers_pipe.scheduler.config.prediction_type == "flow_prediction"


def test_encode_equals_wan_encode_prompt_trimmed(encoder, diffusers_pipe):
    batch = encoder.encode(PROMPTS)
    ref, lengths = encode_prompt(diffusers_pipe, PROMPTS)
    assert (encoder.text_dim, encoder.pooled_dim) == (16, 0)
    assert batch.pooled.shape == (len(PROMPTS), 0)  # no pooled vector
    assert batch.mask.sum(1).tolist() == lengths
    assert lengths[1] == 1  # the empty prompt: </s> alone
    assert lengths[4] == UMT5_MAX_LENGTH  # the long prompt, cut as diffusers cuts it
    for i, n in enumerate(lengths):
        assert batch.valid(i).shape == (n, 16)
        assert (batch.valid(i) - ref[i, :n]).abs().max() <= ATOL, PROMPTS[i]
        assert not ref[i, n:].any()  # what the model re-creates: zero rows up to 512
    # the prompt is cleaned as diffusers cleans it (HTML entities, whitespace)
    assert prompt_clean(PROMPTS[2]) == "A red & blue ball rolls <left>."
    # batched: the same rows one prompt at a time
    for i in (0, 2):
        alone = encoder.encode([PROMPTS[i]])
        assert (alone.valid(0) - batch.valid(i)).abs().max() <= ATOL


def test_a_cut_prompt_is_one_warning_line(encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="lct_train.data.wan_text"):
        encoder.encode(["a short one", LONG])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    assert "first 512 of its" in lines[0]
    assert "umT5 tokens" in lines[0]


def test_bf16_weights_give_close_tokens(tiny_wan_pipeline, encoder):
    half, vae = load_pipeline(tiny_wan_pipeline, dtype=torch.bfloat16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in vae.vae.parameters()} == {torch.float32}  # Wan's VAE stays fp32
    assert half.spec()["dtype"] == "bfloat16"
    got, ref = half.encode(PROMPTS[:4]), encoder.encode(PROMPTS[:4])
    assert got.tokens.dtype == torch.float32
    assert torch.equal(got.mask, ref.mask)
    for i in range(4):
        assert (got.valid(i) - ref.valid(i)).abs().max() <= 0.05 * ref.valid(i).abs().max()


def test_wan_vae_dtype_is_fp32_unless_named(tiny_wan_pipeline):
    """The Wan family declares an fp32 VAE (diffusers' Wan docs, the official code) over the
    requested dtype; an explicit vae_dtype (--vae-dtype) wins; lct-sample's --pipeline likewise."""
    from lct_train.sample.cli import MODEL_DEFAULTS, MODEL_OPTIONS
    from lct_train.sample.toolkit import pipeline_parts

    _, named = load_pipeline(tiny_wan_pipeline, dtype=torch.float32, text_encoder=False,
                             vae_dtype=torch.bfloat16)
    assert {p.dtype for p in named.vae.parameters()} == {torch.bfloat16}
    opts = {k: None for k in MODEL_OPTIONS} | MODEL_DEFAULTS
    opts.update(pipeline=str(tiny_wan_pipeline), dtype="bfloat16")
    text, vae = pipeline_parts(opts, "cpu")
    assert {p.dtype for p in text.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in vae.vae.parameters()} == {torch.float32}
    opts.update(vae_dtype="bfloat16", text_encoder="given")
    assert {p.dtype for p in pipeline_parts(opts, "cpu")[1].vae.parameters()} == {torch.bfloat16}


def test_umt5_kind_and_spec_rebuild_the_same_encoder(tiny_wan_pipeline, encoder):
    spec = encoder.spec()
    assert spec == {"kind": "umt5", "path": str(tiny_wan_pipeline), "dtype": "float32",
                    "max_length": UMT5_MAX_LENGTH, "ftfy": spec["ftfy"]}
    again = build_text_encoder(json.loads(json.dumps(spec)))  # as read back from dataset.json
    alone = build_text_encoder(f"umt5:{tiny_wan_pipeline}")  # the parts given separately
    assert again.spec() == alone.spec() == spec
    ref = encoder.encode(PROMPTS[:1]).valid(0)
    assert torch.equal(again.encode(PROMPTS[:1]).valid(0), ref)
    assert torch.equal(alone.encode(PROMPTS[:1]).valid(0), ref)


def test_umt5_kind_takes_a_folder_of_the_two_parts_alone(tiny_wan_pipeline, encoder, tmp_path):
    """No model_index.json: UMT5EncoderModel from text_encoder/, the tokenizer/'s own class."""
    for part in ("text_encoder", "tokenizer"):
        (tmp_path / part).symlink_to(tiny_wan_pipeline / part)
    parts = build_text_encoder(f"umt5:{tmp_path}")
    assert type(parts.tokenizer) is type(encoder.tokenizer)
    assert torch.equal(parts.encode(PROMPTS[:3]).tokens, encoder.encode(PROMPTS[:3]).tokens)


def test_ftfy_mismatch_with_the_spec_is_one_warning(encoder, caplog):
    spec = dict(encoder.spec(), ftfy=not encoder.spec()["ftfy"])
    with caplog.at_level(logging.WARNING, logger="lct_train.data.wan_text"):
        build_text_encoder(spec)
    assert len(caplog.records) == 1
    assert "ftfy" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("kind", "folder", "named"), [
    ("umt5", "HUNYUAN", ["HunyuanVideoPipeline folder", "umt5: takes a WanPipeline one"]),
    ("hunyuan-video", "WAN", ["WanPipeline folder", "hunyuan-video: takes a HunyuanVideoPipeline one"]),
    ("umt5", "NO_TOKENIZER", ["tokenizer is missing", "must be beside it"]),
])
def test_a_folder_of_the_other_family_is_one_line(kind, folder, named, tiny_wan_pipeline, tiny_hunyuan_pipeline,
                                                 tmp_path):
    root = {"HUNYUAN": tiny_hunyuan_pipeline, "WAN": tiny_wan_pipeline}.get(folder)
    if folder == "NO_TOKENIZER":
        root = tmp_path / "parts"
        root.mkdir()
        (root / "text_encoder").symlink_to(tiny_wan_pipeline / "text_encoder")
    with pytest.raises(ValueError) as err:
        build_text_encoder(f"{kind}:{root}")
    line = str(err.value)
    assert "\n" not in line
    for text in named:
        assert text in line, line
