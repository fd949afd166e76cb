"""Wan LoRA in diffusers' format: the file lct-train writes (default targets plus the patch
embedding, a Conv3d in diffusers) is read by ``WanPipeline``'s loader into diffusers' tiny
``WanTransformer3DModel`` and gives lct-train's merged model's output (fp32, <= 1e-5 relative);
a file diffusers writes (``WanPipeline.save_lora_weights`` of PEFT adapters) starts a run's
adapters (``finetune.init_lora``) with the same output; keys and ranks are checked;
``lct-convert export-lora`` of a Wan run writes that file, and ``--merge`` the merged model."""

from __future__ import annotations

import copy
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

from lct_train.config.schema import FinetuneConfig
from lct_train.convert.cli import main
from lct_train.convert.lora_export import (
    LORA_FILE,
    diffusers_lora_state,
    lora_keymap,
    read_diffusers_lora,
    write_diffusers_lora,
)
from lct_train.convert.verify import load_lct_model
from lct_train.convert.wan_reference import run_wan, run_wan_diffusers, wan_fixed_input
from lct_train.core.errors import ConfigError
from lct_train.core.safetensors_io import SafetensorsReader
from lct_train.model.lora import (
    apply_lora,
    freeze_base,
    is_adapter,
    is_base,
    match_targets,
    merge_lora,
    unwrap_lora,
)
from lct_train.model.precision import island_names
from lct_train.model.wan import WanModel
from lct_train.train.lora_run import load_lora_file
from tests.model.wan.wan_testutils import diffusers_wan, tiny_wan_config, wan_pair

RTOL = 1e-5
RANK, ALPHA = 4, 8.0
TARGETS = (*WanModel.lora_targets, "patch_embedding")


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def _merged(model):
    merged = copy.deepcopy(model)
    merge_lora(merged)
    unwrap_lora(merged)
    return merged


def test_default_targets_are_the_attention_and_ffn_of_every_block():
    names, unmatched = match_targets(WanModel(tiny_wan_config()), WanModel.lora_targets)
    layers = [f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")]
    layers += ["ffn.net.0.proj", "ffn.net.2"]
    assert unmatched == []
    assert sorted(names) == sorted(f"blocks.{b}.{x}" for b in range(2) for x in layers)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    cfg = tiny_wan_config()
    _, model = wan_pair(cfg, seed=3)
    names, _ = match_targets(model, TARGETS)
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    gen = torch.Generator().manual_seed(5)
    adapters = {}
    for name, param in model.named_parameters():
        if is_adapter(name):
            param.data = 0.2 * torch.randn(param.shape, generator=gen)
            adapters[name] = param.data.clone()
    lora_dir = tmp_path_factory.mktemp("wan_lora")
    write_diffusers_lora(lora_dir, *diffusers_lora_state(adapters, RANK, ALPHA,
                                                         keymap=lora_keymap(cfg)))
    return model.eval(), cfg, adapters, lora_dir


def test_wan_pipeline_loads_the_file_and_matches_the_merged_model(adapted):
    from diffusers import WanPipeline

    model, cfg, _, lora_dir = adapted
    inp = wan_fixed_input(cfg, text_len=7, seed=4)
    want = run_wan(_merged(model), cfg, inp)
    assert _relative_error(want, run_wan(model, cfg, inp)) < RTOL  # merging = the adapters
    transformer = diffusers_wan(cfg, seed=3)  # the base the LCT model holds
    base_out = run_wan_diffusers(transformer, inp)
    state, metadata = WanPipeline.lora_state_dict(str(lora_dir), weight_name=LORA_FILE,
                                                  return_lora_metadata=True)
    assert "transformer.blocks.0.attn1.to_q.lora_A.weight" in state
    assert state["transformer.patch_embedding.lora_A.weight"].dim() == 5  # Conv3d LoRA
    WanPipeline.load_lora_into_transformer(state, transformer, metadata=metadata)
    got = run_wan_diffusers(transformer, inp)
    assert _relative_error(base_out, want) > 1e-2  # the adapters change the output
    assert _relative_error(got, want) < RTOL


def test_reader_gives_the_adapters_back(adapted):
    _, cfg, adapters, lora_dir = adapted
    got, rank, alpha = read_diffusers_lora(lora_dir, lora_keymap(cfg))
    assert (rank, alpha) == (RANK, RANK)  # alpha / r folded into B (scale 1)
    assert got.keys() == adapters.keys()
    for name, value in adapters.items():
        scale = ALPHA / RANK if name.endswith("lora_B.weight") else 1.0
        torch.testing.assert_close(got[name], value * scale, rtol=0, atol=0, msg=name)


def _diffusers_lora_file(cfg, out, rank):
    """A LoRA written by diffusers itself: PEFT adapters on the default targets of a tiny
    transformer, saved by ``WanPipeline.save_lora_weights``; returns the adapted transformer."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = diffusers_wan(cfg, seed=3)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"]
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    WanPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(
        transformer), transformer_lora_adapter_metadata={"r": rank, "lora_alpha": 2 * rank})
    return transformer


def _lora_model(cfg, rank):
    _, model = wan_pair(cfg, seed=3)
    names, _ = match_targets(model, WanModel.lora_targets)
    apply_lora(model, names, rank, alpha=float(rank), dropout=0.0)
    return model.eval()


def test_a_diffusers_wan_lora_starts_the_adapters(tmp_path):
    cfg = tiny_wan_config()
    transformer = _diffusers_lora_file(cfg, tmp_path, RANK)
    model = _lora_model(cfg, RANK)
    run_cfg = SimpleNamespace(model=cfg, finetune=FinetuneConfig(
        mode="lora", rank=RANK, alpha=float(RANK), init_lora=str(tmp_path / LORA_FILE)))
    load_lora_file(model, run_cfg)
    inp = wan_fixed_input(cfg, text_len=7, seed=4)
    want = run_wan_diffusers(transformer, inp)
    assert _relative_error(run_wan(model, cfg, inp), want) < RTOL

    other_rank = SimpleNamespace(model=cfg, finetune=FinetuneConfig(
        mode="lora", rank=2 * RANK, init_lora=str(tmp_path / LORA_FILE)))
    with pytest.raises(ConfigError, match=r"^finetune.init_lora: .* has rank 4, finetune.rank "
                                          r"is 8$"):
        load_lora_file(_lora_model(cfg, 2 * RANK), other_rank)
    fewer = _lora_model(cfg, RANK)
    unwrap_lora(fewer.blocks[1])  # this run adapts block 0 only
    with pytest.raises(ConfigError, match=r"adapts 10 layer\(s\) this run does not \(e.g. "
                                          r"blocks.1.attn1.to_k\): set finetune.targets"):
        load_lora_file(fewer, run_cfg)


def _wan_lora_run(root, model, cfg, adapters):
    """A Wan ``finetune=lora`` checkpoint in the trainer's layout (one process, a bf16 base):
    the adapters under ``model``, ``lct_meta.json`` naming its base (an LCT export of
    ``model``'s base, fp32) and the checksum of the base as the run held it (`freeze_base`:
    bf16, the fp32 islands fp32); returns (run, the held model in fp32)."""
    base = root / "base"
    base.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not is_adapter(k)}
    save_file(state, base / "model.safetensors")
    (base / "config.json").write_text(json.dumps(cfg.to_dict()))
    held = copy.deepcopy(model)
    freeze_base(held, torch.bfloat16)
    dtypes = {n: p.dtype for n, p in held.named_parameters() if is_base(n)}
    assert {n for n, d in dtypes.items() if d == torch.float32} == set(island_names(held))
    values = torch.cat([p.double().flatten() for n, p in held.named_parameters() if is_base(n)])
    ckpt = root / "run" / "checkpoints" / "step-00000001"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": adapters}, checkpoint_id=str(ckpt), no_dist=True)
    config = {"model": cfg.to_dict(), "parallel": {"param_dtype": "bfloat16"},
              "finetune": {"base_dtype": "compute"}}
    lora = {"base": str(base), "base_checksum": [float(values.sum()),
                                                 float(values.square().sum())],
            "rank": RANK, "alpha": ALPHA, "targets": list(TARGETS)}
    (ckpt / "lct_meta.json").write_text(json.dumps({"config": config, "step": 1, "lora": lora}))
    for param in held.parameters():
        param.data = param.data.float()
    return root / "run", held


def test_export_lora_of_a_wan_run_and_merge(adapted, tmp_path):
    from diffusers import WanPipeline

    model, cfg, adapters, lora_dir = adapted
    run, held = _wan_lora_run(tmp_path, model, cfg, adapters)
    assert main(["export-lora", str(run), str(tmp_path / "lora")]) == 0
    got = WanPipeline.lora_state_dict(str(tmp_path / "lora"), weight_name=LORA_FILE)
    want = WanPipeline.lora_state_dict(str(lora_dir), weight_name=LORA_FILE)
    assert got.keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=0, msg=key)

    # the base as the run held it (checksum checked), plus the adapters
    assert main(["export-lora", str(run), str(tmp_path / "merged"), "--merge"]) == 0
    merged, merged_cfg = load_lct_model(tmp_path / "merged")
    inp = wan_fixed_input(cfg, text_len=7, seed=4)
    assert merged_cfg == cfg
    assert _relative_error(run_wan(merged, cfg, inp), run_wan(held, cfg, inp)) < RTOL
    # --dtype bf16: the fp32 islands stay fp32, as diffusers' save_pretrained keeps them
    assert main(["export-lora", str(run), str(tmp_path / "half"), "--merge", "--dtype", "bf16"]) == 0
    islands = set(island_names(merged))
    with SafetensorsReader(tmp_path / "half") as reader:
        got = {k: reader.dtype(k) for k in reader}
    assert {k for k, d in got.items() if d == torch.float32} == islands
    assert {d for k, d in got.items() if k not in islands} == {torch.bfloat16}


def test_sampling_merges_a_wan_lora_file_through_the_familys_names(adapted, tmp_path):
    """``lct-sample --lora FILE`` on a Wan export: the file's diffusers names and Conv3d shapes
    (the patch-embedding adapter) are read through Wan's adapter; the loaded model is the
    merged one."""
    from lct_train.sample.checkpoint_io import load_model

    model, cfg, _, lora_dir = adapted
    diffusers_wan(cfg, seed=3).save_pretrained(tmp_path / "transformer")
    assert main(["import-diffusers", str(tmp_path / "transformer"), str(tmp_path / "export")]) == 0
    loaded = load_model(tmp_path / "export", lora=lora_dir)
    assert loaded.config.text_len == 512  # diffusers' Wan pads every prompt to 512
    merged = _merged(model)
    merged.cfg = loaded.config  # the same weights, at the export's prompt window
    inp = wan_fixed_input(loaded.config, text_len=7, seed=4)
    want = run_wan(merged, loaded.config, inp)
    assert _relative_error(run_wan(loaded.model, loaded.config, inp), want) < RTOL
