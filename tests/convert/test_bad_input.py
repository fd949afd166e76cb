"""Refused inputs: a clear error naming the culprit keys or files, and no output left behind."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lct_train.convert.cli import main
from lct_train.convert.model_spec import read_model_config
from lct_train.convert.verify import load_lct_model
from lct_train.core.errors import ConversionError
from tests.testutils import one_line

WEIGHTS = "diffusion_pytorch_model.safetensors"
TRUNCATE_BYTES = 100


@pytest.fixture
def source(tmp_path, tiny_diffusers_dir):
    """A private copy of the tiny diffusers directory that a test may damage."""
    return shutil.copytree(tiny_diffusers_dir, tmp_path / "src")


def _edit_weights(source, edit) -> None:
    tensors = load_file(source / WEIGHTS)
    edit(tensors)
    save_file(tensors, source / WEIGHTS)


def _import_fails(source, tmp_path, capsys) -> str:
    out = tmp_path / "out"
    assert main(["import-diffusers", str(source), str(out)]) == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left
    return capsys.readouterr().err


def test_other_architecture(source, tmp_path, capsys):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(
        json.dumps({**config, "_class_name": "FluxTransformer2DModel"})
    )
    err = _import_fails(source, tmp_path, capsys)
    assert "FluxTransformer2DModel" in err
    assert "HunyuanVideoTransformer3DModel" in err


def test_unsupported_variant(source, tmp_path, capsys):
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(
        json.dumps({**config, "image_condition_type": "token_replace"})
    )
    assert "image_condition_type" in _import_fails(source, tmp_path, capsys)


def test_missing_key(source, tmp_path, capsys):
    _edit_weights(source, lambda t: t.pop("transformer_blocks.1.attn.norm_added_k.weight"))
    err = _import_fails(source, tmp_path, capsys)
    assert "transformer_blocks.1.attn.norm_added_k.weight" in err
    assert "keys HunyuanVideoTransformer3DModel needs but the checkpoint lacks (1)" in err


def test_extra_key(source, tmp_path, capsys):
    _edit_weights(
        source, lambda t: t.update({"transformer_blocks.0.attn.lora_A.weight": torch.zeros(2)})
    )
    err = _import_fails(source, tmp_path, capsys)
    assert "transformer_blocks.0.attn.lora_A.weight" in err
    assert "keys HunyuanVideoTransformer3DModel does not have (1)" in err


def test_key_of_a_block_the_config_lacks(source, tmp_path, capsys):
    _edit_weights(
        source, lambda t: t.update({"single_transformer_blocks.5.proj_out.bias": torch.zeros(16)})
    )
    assert "single_transformer_blocks.5.proj_out.bias" in _import_fails(source, tmp_path, capsys)


def test_shape_mismatch(source, tmp_path, capsys):
    _edit_weights(source, lambda t: t.update({"proj_out.bias": torch.zeros(3)}))
    err = _import_fails(source, tmp_path, capsys)
    assert "proj_out.bias: got (3,), expected (16,)" in err


def test_truncated_file(source, tmp_path, capsys):
    data = (source / WEIGHTS).read_bytes()
    (source / WEIGHTS).write_bytes(data[:-TRUNCATE_BYTES])
    err = _import_fails(source, tmp_path, capsys)
    assert WEIGHTS in err
    assert "cannot read safetensors file" in err


def test_existing_output_is_kept(source, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["import-diffusers", str(source), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_export_loads_strictly_against_its_config(source, tmp_path):
    out = tmp_path / "lct"
    assert main(["import-diffusers", str(source), str(out)]) == 0
    cfg = read_model_config(out)
    other = type(cfg).from_dict({**cfg.to_dict(), "num_single_blocks": 2})
    with pytest.raises(ConversionError) as info:
        load_lct_model(out, cfg=other)
    assert "single_transformer_blocks.1.proj_out.weight" in str(info.value)
    assert "missing keys (14)" in str(info.value)
    wider = type(cfg).from_dict({**cfg.to_dict(), "text_dim": 24})
    with pytest.raises(ConversionError, match=r"context_embedder.proj_in.weight: got \(16, 16\)"):
        load_lct_model(out, cfg=wider)


def test_failure_mid_write_leaves_nothing(source, tmp_path, monkeypatch, capsys):
    """The 2nd shard fails to write: neither the output nor its temporary directory remains."""
    import lct_train.core.safetensors_io as safetensors_io

    written = []
    save_file_ = safetensors_io.save_file

    def fail_on_second_shard(tensors, filename, metadata=None):
        if written:
            raise OSError(f"disk full writing {filename}")
        written.append(filename)
        save_file_(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors_io, "save_file", fail_on_second_shard)
    out = tmp_path / "out"
    assert main(["import-diffusers", str(source), str(out), "--max-shard-size", "4KB"]) == 2
    assert one_line(capsys.readouterr().err).startswith("lct-convert import-diffusers: error: "
                                                        "disk full writing ")
    assert len(written) == 1  # the failure came after a shard was on disk
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_key_map_names_unmapped_keys(tiny_diffusers):
    from lct_train.convert.hunyuan_config import config_from_diffusers
    from lct_train.convert.hunyuan_keymap import HunyuanVideoStateDictAdapter

    adapter = HunyuanVideoStateDictAdapter(config_from_diffusers(dict(tiny_diffusers.config)))
    keys = [*tiny_diffusers.state_dict(), "transformer_blocks.0.attn.to_qkv.weight"]
    with pytest.raises(
        ConversionError, match=r"key map \(1\):\n  transformer_blocks.0.attn.to_qkv"
    ):
        adapter.from_diffusers(keys)
