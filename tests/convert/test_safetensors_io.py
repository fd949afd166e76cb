"""Sharded safetensors writing/reading and the atomic output directory."""

from __future__ import annotations

import json

import pytest
import torch

from lct_train.core.errors import ConversionError
from lct_train.core.safetensors_io import (
    SafetensorsReader,
    atomic_output_dir,
    plan_shards,
    write_sharded,
)

FLOAT_BYTES = 4


def test_plan_shards_keeps_order_and_limit():
    sizes = {"a": 40, "b": 40, "c": 100, "d": 10, "e": 10}
    assert plan_shards(sizes, 80) == [["a", "b"], ["c"], ["d", "e"]]
    assert plan_shards(sizes, 10**6) == [list(sizes)]
    assert plan_shards({}, 80) == []


def test_sharded_write_read_round_trip(tmp_path):
    tensors = {f"w{i}": torch.randn(i + 1, 3) for i in range(5)}
    qkv = torch.randn(6, 2)
    tensors |= {"q": qkv[:2], "k": qkv[2:4]}  # views of one storage are written apart
    sizes = {k: v.numel() * FLOAT_BYTES for k, v in tensors.items()}
    shards = plan_shards(sizes, 40)
    files = write_sharded(tmp_path, "model", shards, lambda keys: {k: tensors[k] for k in keys})
    assert len(files) == len(shards) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    with SafetensorsReader(tmp_path) as reader:
        assert reader.shapes() == {k: tuple(v.shape) for k, v in tensors.items()}
        for key, value in tensors.items():
            assert torch.equal(reader.get(key), value)


def test_index_naming_a_missing_shard(tmp_path):
    tensors = {"a": torch.zeros(4), "b": torch.zeros(4)}
    write_sharded(tmp_path, "model", [["a"], ["b"]], lambda keys: {k: tensors[k] for k in keys})
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match=r"model-00002-of-00002\.safetensors"):
        SafetensorsReader(tmp_path)


def _fail_half_way(out) -> None:
    with atomic_output_dir(out) as tmp:
        (tmp / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("boom")


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        _fail_half_way(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_standard_name_preferred_over_variant(tmp_path):
    write_sharded(tmp_path, "diffusion_pytorch_model", [["a"]], lambda keys: {"a": torch.ones(2)})
    write_sharded(
        tmp_path, "diffusion_pytorch_model.fp16", [["a"]], lambda k: {"a": torch.zeros(2)}
    )
    with SafetensorsReader(tmp_path) as reader:
        assert torch.equal(reader.get("a"), torch.ones(2))
    write_sharded(tmp_path, "other", [["a"]], lambda keys: {"a": torch.zeros(2)})
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ConversionError, match=r"must hold one \*\.safetensors file"):
        SafetensorsReader(tmp_path)
