"""Loading weights for sampling: consolidated exports and DCP step directories (one process),
of either family (the MMDiT, Wan)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp

from lct_train.model.wan import WanConfig, WanModel
from lct_train.sample.checkpoint_io import DEFAULT_WINDOW, CheckpointError, load_model
from tests.sample.tiny import tiny_model, tiny_wan_model, write_consolidated


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_consolidated_export_loads_with_the_given_mask_and_window(tmp_path, config):
    model = tiny_model(config, torch.float32)
    file = write_consolidated(tmp_path / "export", config, model)
    for path in (file, file.parent):
        loaded = load_model(path)
        assert _same_weights(loaded.model, model)
        assert (loaded.mask, loaded.window) == ("bidirectional", DEFAULT_WINDOW)
    loaded = load_model(file, mask="causal", window=4, dtype=torch.float64)
    assert (loaded.mask, loaded.window) == ("causal", 4)
    assert next(loaded.model.parameters()).dtype == torch.float64


def _write_dcp(folder, config, model, ema):
    folder.mkdir(parents=True)
    state = {"model": model.state_dict(),
             "optimizer": {"state": {"x": torch.zeros(2)}}, "train_state": {"step": 7}}
    if ema is not None:
        state["ema"] = ema.state_dict()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    meta = {"stage": "causal_ft", "mask": "causal", "step": 7,
            "config": {"model": config.to_dict(), "stage": {"mask": "causal"},
                       "data": {"max_shots": 5}}}
    (folder / "lct_meta.json").write_text(json.dumps(meta))


def test_dcp_step_directory_loads_ema_or_model_weights_and_its_mask(tmp_path, config):
    model = tiny_model(config, torch.float32)
    ema = tiny_model(config, torch.float32)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.5)
    step = tmp_path / "run" / "checkpoints" / "step-00000007"
    _write_dcp(step, config, model, ema)
    loaded = load_model(step)
    assert _same_weights(loaded.model, ema)
    assert (loaded.mask, loaded.window) == ("causal", 5)
    assert _same_weights(load_model(step, weights="model").model, model)
    assert load_model(step, mask="bidirectional").mask == "bidirectional"
    assert _same_weights(load_model(tmp_path / "run").model, ema)  # run dir: newest step


def test_dcp_without_ema_loads_model_weights_by_default(tmp_path, config):
    model = tiny_model(config, torch.float32)
    step = tmp_path / "run" / "checkpoints" / "step-00000003"
    _write_dcp(step, config, model, None)
    assert _same_weights(load_model(step).model, model)
    with pytest.raises(CheckpointError, match=r"holds no `ema` weights.*--weights model"):
        load_model(step, weights="ema")


def test_a_wan_export_and_a_wan_dcp_checkpoint_load_as_wan_models(tmp_path, wan_config):
    model = tiny_wan_model(wan_config, torch.float32)
    loaded = load_model(write_consolidated(tmp_path / "export", wan_config, model))
    assert isinstance(loaded.model, WanModel)
    assert isinstance(loaded.config, WanConfig)
    assert loaded.config.to_dict() == wan_config.to_dict()
    assert _same_weights(loaded.model, model)
    step = tmp_path / "run" / "checkpoints" / "step-00000007"
    _write_dcp(step, wan_config, model, None)
    loaded = load_model(step)
    assert isinstance(loaded.model, WanModel)
    assert _same_weights(loaded.model, model)
    assert (loaded.mask, loaded.window) == ("causal", 5)


def test_checkpoint_errors_name_the_path(tmp_path, config):
    with pytest.raises(CheckpointError, match="nope"):
        load_model(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"empty.*config\.json is missing"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="weights must be one of"):
        load_model(empty, weights="best")
    file = write_consolidated(tmp_path / "other", config, tiny_model(config))
    config_file = file.parent / "config.json"
    config_file.write_text(json.dumps({**config.to_dict(), "num_single_blocks": 2}))
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_model(file)


def test_dcp_meta_without_model_config_names_the_file(tmp_path, config):
    step = tmp_path / "run" / "checkpoints" / "step-00000003"
    _write_dcp(step, config, tiny_model(config, torch.float32), None)
    (step / "lct_meta.json").write_text(json.dumps({"step": 3, "mask": "causal"}))
    with pytest.raises(CheckpointError, match=r"lct_meta\.json holds no model config"):
        load_model(step)
