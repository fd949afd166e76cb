"""lct-convert on Wan: a tiny random diffusers `WanTransformer3DModel` saved as a pipeline root
(model_index.json + transformer/), imported, verified against diffusers, exported back bit-exact;
one-line refusals for missing, extra and mis-shaped keys and for unsupported variants."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lct_train.convert.cli import main
from lct_train.convert.model_spec import read_model_config
from lct_train.convert.verify import load_lct_model
from lct_train.convert.wan_reference import run_wan, run_wan_diffusers, wan_fixed_input
from lct_train.core.safetensors_io import SafetensorsReader
from lct_train.model.wan import WanConfig
from tests.model.wan.wan_testutils import diffusers_wan, tiny_wan_config
from tests.testutils import one_line

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def source_model():
    return diffusers_wan(tiny_wan_config(), seed=3)


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory, source_model):
    root = tmp_path_factory.mktemp("wan_pipeline")
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]}))
    source_model.save_pretrained(root / "transformer", safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory, pipeline_root):
    out = tmp_path_factory.mktemp("wan_import") / "lct"
    assert main(["import-diffusers", str(pipeline_root), str(out)]) == 0
    return out


def test_import_reads_the_family_and_matches_diffusers(imported, source_model):
    cfg = read_model_config(imported)
    assert isinstance(cfg, WanConfig)
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.text_len) == (2, 2, 12, 512)
    model, _ = load_lct_model(imported, cfg=cfg)
    inp = wan_fixed_input(cfg, text_len=7)
    got, want = run_wan(model, cfg, inp), run_wan_diffusers(source_model, inp)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_verify_against_diffusers(imported, pipeline_root, capsys):
    assert main(["verify", str(imported), "--reference", str(pipeline_root / "transformer")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "MISMATCH" not in out


def test_round_trip_is_bit_exact(imported, tmp_path, source_model):
    back = tmp_path / "back"
    assert main(["export-diffusers", str(imported), str(back), "--max-shard-size", "8KB"]) == 0
    config = json.loads((back / "config.json").read_text())
    assert config["_class_name"] == "WanTransformer3DModel"
    assert len(list(back.glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    want = source_model.state_dict()
    with SafetensorsReader(back) as reader:
        assert set(reader) == set(want)
        for key, value in want.items():
            assert torch.equal(reader.get(key), value), key
    from diffusers import WanTransformer3DModel

    loaded = WanTransformer3DModel.from_pretrained(back, local_files_only=True)
    assert loaded.config.num_layers == 2


@pytest.fixture
def damaged(tmp_path, pipeline_root):
    """A private copy of the pipeline that a test may damage."""
    return shutil.copytree(pipeline_root, tmp_path / "src")


def _edit(root, edit) -> None:
    tensors = load_file(root / "transformer" / WEIGHTS)
    edit(tensors)
    save_file(tensors, root / "transformer" / WEIGHTS)


def _fails(root, tmp_path, capsys, *extra) -> str:
    out = tmp_path / "out"
    assert main(["import-diffusers", str(root), str(out), *extra]) == 2
    assert not out.exists()
    return one_line(capsys.readouterr().err)


def test_missing_extra_and_misshaped_keys_are_one_line_refusals(damaged, tmp_path, capsys):
    _edit(damaged, lambda t: t.pop("blocks.1.attn2.norm_k.weight"))
    err = _fails(damaged, tmp_path, capsys)
    assert "keys WanTransformer3DModel needs but the checkpoint lacks (1): " \
           "blocks.1.attn2.norm_k.weight" in err
    _edit(damaged, lambda t: t.update({"blocks.1.attn2.norm_k.weight": torch.ones(24),
                                       "blocks.0.attn2.add_k_proj.weight": torch.zeros(24, 16)}))
    err = _fails(damaged, tmp_path, capsys)
    assert "keys WanTransformer3DModel does not have (1): blocks.0.attn2.add_k_proj.weight" in err
    _edit(damaged, lambda t: (t.pop("blocks.0.attn2.add_k_proj.weight"),
                              t.update({"scale_shift_table": torch.zeros(1, 3, 24)})))
    err = _fails(damaged, tmp_path, capsys)
    assert "scale_shift_table: got (1, 3, 24), expected (1, 2, 24)" in err


@pytest.mark.parametrize(("key", "value"), [("image_dim", 32), ("qk_norm", "rms_norm"),
                                            ("_class_name", "WanVACETransformer3DModel")])
def test_unsupported_variants(damaged, tmp_path, capsys, key, value):
    file = damaged / "transformer" / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), key: value}))
    err = _fails(damaged, tmp_path, capsys)
    assert repr(value) in err or str(value) in err


def test_base_config_of_another_family_is_refused(damaged, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("num_heads: 2\nhead_dim: 16\nrope_axes_dim: [4, 6, 6]\n")
    err = _fails(damaged, tmp_path, capsys, "--base-config", str(base))
    assert "--base-config is a ModelConfig" in err


def test_base_config_supplies_the_lct_settings(pipeline_root, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("family: wan\nshot_gap: 8\nrope_offsets: diagonal\n")
    out = tmp_path / "lct"
    assert main(["import-diffusers", str(pipeline_root), str(out), "--base-config", str(base)]) == 0
    cfg = read_model_config(out)
    assert (cfg.shot_gap, cfg.rope_offsets, cfg.num_layers) == (8, "diagonal", 2)


def test_verify_two_wan_exports_and_refuse_another_family(imported, tmp_path, capsys,
                                                          tiny_diffusers_dir):
    again = tmp_path / "init"
    assert main(["init", str(imported), str(again), "--set", "shot_gap=8"]) == 0
    assert read_model_config(again).shot_gap == 8  # an LCT setting: the outputs still agree
    assert main(["verify", str(again), "--reference", str(imported)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", str(imported), "--reference", str(tiny_diffusers_dir)]) == 2
    assert "are different model families" in one_line(capsys.readouterr().err)


def test_bf16_import_and_export_keep_the_fp32_islands(pipeline_root, tmp_path):
    """--dtype bf16 casts all but the fp32 islands (scale_shift_table, norm2, time_embedder),
    per key as diffusers' from_pretrained(torch_dtype=bf16) holds them, both ways."""
    from diffusers import WanTransformer3DModel

    from lct_train.convert.model_spec import island_keys

    out, back = tmp_path / "lct", tmp_path / "back"
    assert main(["import-diffusers", str(pipeline_root), str(out), "--dtype", "bf16"]) == 0
    islands = island_keys(read_model_config(out))
    assert any("scale_shift_table" in k for k in islands)
    assert any("norm2" in k for k in islands)
    with SafetensorsReader(out) as reader:
        got = {k: reader.dtype(k) for k in reader}
    assert {k for k, d in got.items() if d == torch.float32} == islands
    assert {d for k, d in got.items() if k not in islands} == {torch.bfloat16}
    assert main(["export-diffusers", str(out), str(back), "--dtype", "bf16"]) == 0
    ref = WanTransformer3DModel.from_pretrained(pipeline_root / "transformer", torch_dtype=torch.bfloat16,
                                                local_files_only=True)
    with SafetensorsReader(back) as reader:
        assert {k: reader.dtype(k) for k in reader} == {k: v.dtype for k, v in ref.state_dict().items()}


# Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json (the architecture fields)
WAN21_13B_DIFFUSERS = {
    "_class_name": "WanTransformer3DModel", "added_kv_proj_dim": None, "attention_head_dim": 128,
    "cross_attn_norm": True, "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256, "image_dim": None,
    "in_channels": 16, "num_attention_heads": 12, "num_layers": 30, "out_channels": 16,
    "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096,
}


@pytest.mark.parametrize("preset", ["wan2.1-1.3b", "wan2.1-14b", "wan2.2-ti2v-5b"])
def test_import_of_a_preset_architecture_takes_its_sampling(preset):
    """An import whose architecture is a preset's takes the preset's sampling (1.3B: shift 3.0,
    as training from the preset would); another architecture the official T2V defaults."""
    from lct_train.config.store import find_conf_dir
    from lct_train.convert.wan_config import config_from_diffusers, config_to_diffusers

    want = WanConfig.from_yaml(find_conf_dir() / "model" / f"{preset}.yaml")
    assert config_from_diffusers(config_to_diffusers(want)).sampling == want.sampling


def test_import_sampling_of_the_13b_config_and_a_tiny_one():
    from lct_train.convert.wan_config import WAN_T2V_SAMPLING, config_from_diffusers

    assert config_from_diffusers(WAN21_13B_DIFFUSERS).sampling.shift == 3.0
    tiny = config_from_diffusers({**WAN21_13B_DIFFUSERS, "num_layers": 2})
    assert tiny.sampling == WanConfig.from_dict({"sampling": WAN_T2V_SAMPLING}).sampling
