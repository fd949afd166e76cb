"""DCP training checkpoint -> consolidated safetensors -> one process: equal weights."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from lct_train.convert.cli import main
from lct_train.convert.dcp_export import load_dcp_weights
from lct_train.convert.model_spec import build_model, read_model_config
from lct_train.convert.verify import load_lct_model
from lct_train.core.errors import ConversionError
from lct_train.core.safetensors_io import SafetensorsReader
from lct_train.sample.checkpoint_io import load_model
from tests.convert.dcp_worker import STEP
from tests.testutils import tiny_config
from tests.train.torchrun import env

WORKER = Path(__file__).with_name("dcp_worker.py")
NUM_RANKS = 2
WORKER_TIMEOUT_S = 120
SMALL_SHARD = "20KB"  # several shards for the tiny model
MAX_SHOTS = 9


def _save_single_process_checkpoint(root: Path, cfg=None) -> tuple[Path, dict, dict]:
    """A checkpoint in the trainer's layout, written by one process (no process group)."""
    cfg = cfg or tiny_config()
    model = build_model(cfg)
    raw = model.state_dict()
    ema = {k: v + 1.0 for k, v in raw.items()}
    ckpt = root / "checkpoints" / f"step-{STEP:08d}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(
            {"model": raw, "ema": ema, "train_state": {"step": STEP}},
            checkpoint_id=str(ckpt),
            no_dist=True,
        )
    config = {"model": cfg.to_dict(), "data": {"max_shots": MAX_SHOTS}}
    meta = {"config": config, "step": STEP, "mask": "causal"}
    (ckpt / "lct_meta.json").write_text(json.dumps(meta))
    return ckpt, raw, ema


def _assert_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_export_ema_sharded_and_raw_bf16(tmp_path):
    ckpt, raw, ema = _save_single_process_checkpoint(tmp_path / "run")
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "run"), str(out), "--max-shard-size", SMALL_SHARD]) == 0
    assert (out / "model.safetensors.index.json").is_file()
    with SafetensorsReader(out) as reader:
        _assert_equal(reader.load_all(), ema)
    assert read_model_config(out) == tiny_config()
    info = json.loads((out / "lct_export.json").read_text())
    assert (info["step"], info["weights"]) == (STEP, "ema")
    assert (info["mask"], info["max_shots"]) == ("causal", MAX_SHOTS)  # read by the sampler

    out_bf16 = tmp_path / "export-bf16"
    assert main(["export", str(ckpt), str(out_bf16), "--weights", "model", "--dtype", "bf16"]) == 0
    _assert_equal(
        load_file(out_bf16 / "model.safetensors"), {k: v.bfloat16() for k, v in raw.items()}
    )


def test_bf16_export_of_a_wan_checkpoint_keeps_the_fp32_islands(tmp_path):
    from lct_train.model.precision import island_names
    from tests.model.wan.wan_testutils import tiny_wan_config

    cfg = tiny_wan_config()
    ckpt, raw, _ = _save_single_process_checkpoint(tmp_path / "run", cfg)
    out = tmp_path / "export"
    assert main(["export", str(ckpt), str(out), "--weights", "model", "--dtype", "bf16"]) == 0
    islands = set(island_names(build_model(cfg, device="meta")))
    assert islands
    want = {k: v.float() if k in islands else v.bfloat16() for k, v in raw.items()}
    _assert_equal(load_file(out / "model.safetensors"), want)


def _export_weights(path) -> dict:
    """The weights of an export, as `lct-convert verify` loads them (checked on its config)."""
    model, _ = load_lct_model(path)
    return model.state_dict()


def test_causal_ft_init_from_checkpoint(tmp_path):
    ckpt, _, ema = _save_single_process_checkpoint(tmp_path / "run")
    _assert_equal(load_dcp_weights(ckpt), ema)
    init = tmp_path / "init"
    assert main(["init", str(ckpt), str(init), "--set", "text_rope=false"]) == 0
    assert read_model_config(init).text_rope is False
    _assert_equal(_export_weights(init), ema)


def test_init_from_an_export_weights_file_keeps_its_provenance(tmp_path, capsys):
    _, _, ema = _save_single_process_checkpoint(tmp_path / "run")
    export = tmp_path / "export"
    assert main(["export", str(tmp_path / "run"), str(export)]) == 0
    init = tmp_path / "init"
    assert main(["init", str(export / "model.safetensors"), str(init), "--dtype", "bf16"]) == 0
    _assert_equal(_export_weights(init), {k: v.bfloat16().float() for k, v in ema.items()})
    info = json.loads((init / "lct_export.json").read_text())
    assert (info["mask"], info["max_shots"]) == ("causal", MAX_SHOTS)
    assert info["dtype"] == str(torch.bfloat16)
    loaded = load_model(init)  # the sampler reads the copied mask and window
    assert (loaded.mask, loaded.window) == ("causal", MAX_SHOTS)

    assert main(["init", str(export), str(tmp_path / "x"), "--weights", "model"]) == 2
    assert "leave --weights out" in capsys.readouterr().err
    not_an_export = tmp_path / "loose" / "weights.safetensors"
    not_an_export.parent.mkdir()
    not_an_export.write_bytes((export / "model.safetensors").read_bytes())
    assert main(["init", str(not_an_export), str(tmp_path / "y")]) == 2
    assert f"{not_an_export.parent / 'config.json'} does not exist" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "nothing"), str(tmp_path / "z")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name in ("x", "y", "z")]


def test_not_a_checkpoint_and_wrong_weight_set(tmp_path, capsys):
    ckpt, _, _ = _save_single_process_checkpoint(tmp_path / "run")
    assert main(["export", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err
    narrower = {**tiny_config().to_dict(), "head_dim": 8, "rope_axes_dim": [0, 4, 4]}
    (ckpt / "lct_meta.json").write_text(json.dumps({"config": {"model": narrower}}))
    assert main(["export", str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "shape mismatches" in err
    assert "transformer_blocks.0.attn.norm_q.weight: got (16,), expected (8,)" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConversionError, match="weights must be one of"):
        load_dcp_weights(ckpt, weights="model_typo")


def test_checkpoint_without_ema(tmp_path):
    ckpt, raw, _ = _save_single_process_checkpoint(tmp_path / "run")
    meta = (ckpt / "lct_meta.json").read_text()
    other = tmp_path / "other" / "step-00000001"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": raw, "optimizer": {}}, checkpoint_id=str(other), no_dist=True)
    (other / "lct_meta.json").write_text(meta)
    with pytest.raises(
        ConversionError,
        match=r"holds no `ema` weights; its top-level keys are \['model'\] \(pass weights='model'",
    ):
        load_dcp_weights(other, weights="ema")
    _assert_equal(load_dcp_weights(tmp_path / "other", weights="model"), raw)
    # default: `ema` when stored, else `model` (a run with EMA off)
    _assert_equal(load_dcp_weights(tmp_path / "other"), raw)
    out = tmp_path / "export"
    assert main(["export", str(other), str(out)]) == 0
    assert json.loads((out / "lct_export.json").read_text())["weights"] == "model"


def test_truncated_shard(tmp_path, capsys):
    ckpt, _, _ = _save_single_process_checkpoint(tmp_path / "run")
    shard = next(ckpt.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert main(["export", str(ckpt), str(tmp_path / "out")]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_wrapper_prefixes_are_dropped(tmp_path):
    """Keys saved through torch.compile / activation-checkpoint wrappers map to bare FQNs."""
    cfg = tiny_config()
    raw = build_model(cfg).state_dict()
    wrapped = {
        k.replace(
            "transformer_blocks.0.", "transformer_blocks.0._checkpoint_wrapped_module."
        ).replace("proj_out.", "_orig_mod.proj_out."): v
        for k, v in raw.items()
    }
    assert wrapped.keys() != raw.keys()
    ckpt = tmp_path / f"step-{STEP:08d}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"ema": wrapped}, checkpoint_id=str(ckpt), no_dist=True)
    (ckpt / "lct_meta.json").write_text(json.dumps({"config": {"model": cfg.to_dict()}}))
    _assert_equal(load_dcp_weights(tmp_path), raw)


@pytest.mark.slow
def test_two_rank_fsdp_checkpoint_exports_full_weights(tmp_path):
    """FSDP2 on 2 gloo ranks writes the checkpoint; one process consolidates it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={NUM_RANKS}", str(WORKER), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env())
    assert result.returncode == 0, result.stderr[-4000:]
    ckpt = tmp_path / "checkpoints" / f"step-{STEP:08d}"
    assert len(list(ckpt.glob("*.distcp"))) == NUM_RANKS
    for weights in ("ema", "model"):
        out = tmp_path / f"export-{weights}"
        assert (
            main(
                [
                    "export",
                    str(tmp_path),
                    str(out),
                    "--weights",
                    weights,
                    "--max-shard-size",
                    SMALL_SHARD,
                ]
            )
            == 0
        )
        want = load_file(tmp_path / f"reference_{weights}.safetensors")
        with SafetensorsReader(out) as reader:
            _assert_equal(reader.load_all(), want)
        _assert_equal(_export_weights(out), want)
