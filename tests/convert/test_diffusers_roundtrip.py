"""import-diffusers -> export-diffusers: diffusers loads the result and gives the same output."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel

from lct_train.convert.cli import main
from lct_train.convert.model_spec import read_model_config
from lct_train.convert.reference import fixed_input, run_diffusers
from lct_train.core.safetensors_io import SafetensorsReader

DIFFUSERS_TIMESTEP_SCALE = 1000.0
FP32_REL = 1e-5  # the project's fp32 parity bound with diffusers
SMALL_SHARD = "4KB"  # forces several shards and an index


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, tiny_diffusers_dir):
    root = tmp_path_factory.mktemp("roundtrip")
    assert main(["import-diffusers", str(tiny_diffusers_dir), str(root / "lct")]) == 0
    args = [
        "export-diffusers",
        str(root / "lct"),
        str(root / "back"),
        "--max-shard-size",
        SMALL_SHARD,
    ]
    assert main(args) == 0
    return root


def test_exported_directory_is_sharded_diffusers_layout(round_trip):
    back = round_trip / "back"
    config = json.loads((back / "config.json").read_text())
    assert config["_class_name"] == "HunyuanVideoTransformer3DModel"
    assert (back / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert len(list(back.glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1


def test_diffusers_loads_export_with_identical_weights(round_trip, tiny_diffusers):
    loaded = HunyuanVideoTransformer3DModel.from_pretrained(
        round_trip / "back", local_files_only=True
    )
    want = tiny_diffusers.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_diffusers_output_after_round_trip(round_trip, tiny_diffusers):
    loaded = HunyuanVideoTransformer3DModel.from_pretrained(
        round_trip / "back", local_files_only=True
    )
    cfg = read_model_config(round_trip / "lct")
    inp = fixed_input(cfg, text_pad=2)
    want = run_diffusers(tiny_diffusers, inp, DIFFUSERS_TIMESTEP_SCALE)
    got = run_diffusers(loaded.eval(), inp, DIFFUSERS_TIMESTEP_SCALE)
    # The weights are bit-identical (test above), but diffusers loads them as views of one flat
    # buffer: other memory alignment, other SIMD rounding. Same output = within fp32 rounding.
    assert ((got - want).abs().max() / want.abs().max()).item() <= FP32_REL


def test_bf16_export_casts_every_tensor(round_trip, tiny_diffusers):
    out = round_trip / "back-bf16"
    assert main(["export-diffusers", str(round_trip / "lct"), str(out), "--dtype", "bf16"]) == 0
    with SafetensorsReader(out) as reader:
        assert {reader.dtype(k) for k in reader} == {torch.bfloat16}
        want = tiny_diffusers.state_dict()
        for key in reader:
            assert torch.equal(reader.get(key), want[key].to(torch.bfloat16)), key


def test_text_rope_model_export_warns(round_trip, tmp_path):
    src = round_trip / "lct"
    init = tmp_path / "lct-rope"
    assert main(["init", str(src), str(init), "--set", "text_rope=true"]) == 0
    assert read_model_config(init).text_rope is True
    with pytest.warns(UserWarning, match="text RoPE"):
        assert main(["export-diffusers", str(init), str(tmp_path / "back")]) == 0
