"""fp32 islands (``lct_train.model.precision``): the parameters Wan keeps in fp32 are diffusers'
(``WanTransformer3DModel`` loaded with ``torch_dtype=bfloat16``); `cast_model` keeps them fp32
on one device (a bf16 forward closer to the fp32 one than ``.to(bf16)``'s); under FSDP2 with a bf16 ``param_dtype`` (2 gloo ranks) they are fp32 inside the
forward, the rest bf16, every gradient comes back, and the last hidden state is closer to the
fp32 model's than with every parameter gathered in bf16."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from lct_train.convert.wan_reference import run_wan, wan_fixed_input
from lct_train.model.init import init_weights
from lct_train.model.mmdit import LCTModel
from lct_train.model.precision import cast_model, island_names, precision_units
from lct_train.model.wan import WanModel
from tests.model.wan.fp32_island_worker import BATCH, SEED, WATCH, record_hidden, scene_batch
from tests.model.wan.wan_testutils import diffusers_wan, tiny_wan_config, wan_pair
from tests.testutils import tiny_config
from tests.train.torchrun import LAUNCH_TIMEOUT_S, env

WORKER = Path(__file__).with_name("fp32_island_worker.py")


def test_islands_are_the_ones_diffusers_keeps_in_fp32(tmp_path):
    from diffusers import WanTransformer3DModel

    cfg = tiny_wan_config()
    diffusers_wan(cfg).save_pretrained(tmp_path, safe_serialization=True)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    want = {n for n, p in loaded.named_parameters() if p.dtype == torch.float32}
    assert {"blocks.0.norm2.weight", "scale_shift_table"} <= want
    _, model = wan_pair(cfg)
    assert set(island_names(model)) == want
    cast_model(model, torch.bfloat16)
    for name, param in model.named_parameters():
        assert param.dtype == (torch.float32 if name in want else torch.bfloat16), name
    mmdit = cast_model(LCTModel(tiny_config()), torch.bfloat16)  # HunyuanVideo: no islands
    assert {p.dtype for p in mmdit.parameters()} == {torch.bfloat16}


def test_cast_model_keeps_the_stored_islands_bit_exact():
    _, model = wan_pair(tiny_wan_config())
    want = model.blocks[0].scale_shift_table.detach().clone()
    cast_model(model, torch.bfloat16)
    assert torch.equal(model.blocks[0].scale_shift_table, want)  # no round trip through bf16


def test_units_of_one_precision():
    model = WanModel(tiny_wan_config())
    model.blocks[0] = checkpoint_wrapper(model.blocks[0])
    block = model.blocks[0]._checkpoint_wrapped_module
    root_fp32, low, fp32 = precision_units(model, model.blocks[0])
    assert (root_fp32, low, fp32) == (True, [block.attn1, block.attn2, block.ffn], [])
    root_fp32, low, fp32 = precision_units(model, model)
    cond = model.condition_embedder
    assert (root_fp32, fp32) == (True, [])  # the model's table and time embedder
    assert low == [model.patch_embedding, cond.time_proj, cond.text_embedder, model.proj_out]
    mmdit = LCTModel(tiny_config())
    assert precision_units(mmdit, mmdit.transformer_blocks[0]) == (False, [], [])


@pytest.fixture(scope="module")
def fp32_hidden():
    cfg = tiny_wan_config(attn_backend="reference")
    model = WanModel(cfg)
    init_weights(model, torch.Generator().manual_seed(SEED))
    hidden = record_hidden(model)
    meta, video, text, t, _ = scene_batch(cfg, list(range(len(BATCH))))
    with torch.no_grad():
        model(video, text, None, t, meta)
    return hidden[0], model.blocks[0].scale_shift_table.detach()


@pytest.mark.slow
def test_two_rank_bf16_fsdp_gathers_the_islands_in_fp32(tmp_path, fp32_hidden):
    out = tmp_path / "result.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(out)
    islands = {"blocks.0.scale_shift_table", "blocks.0.norm2.weight", "scale_shift_table",
               "condition_embedder.time_embedder.linear_1.weight"}
    watched = {f"{m}.{p}" for m, ps in WATCH.items() for p in ps} | islands
    assert set(got["islands"]["dtypes"]) == watched
    for name in watched:
        want = torch.float32 if name in islands else torch.bfloat16
        assert got["islands"]["dtypes"][name] == want, name
        assert got["plain"]["dtypes"][name] == torch.bfloat16, name
    fp32_hidden, fp32_table = fp32_hidden
    assert torch.equal(got["islands"]["table"], fp32_table)  # gathered bit-exact
    assert torch.equal(got["plain"]["table"], fp32_table.bfloat16())
    errors = {}
    for mode in ("islands", "plain"):
        assert got[mode]["grads_ok"], mode
        diff = got[mode]["hidden"] - fp32_hidden
        errors[mode] = float(diff.norm() / fp32_hidden.norm())
    assert errors["islands"] < 0.02  # bf16 compute
    assert errors["islands"] < errors["plain"], errors  # 0.0048 < 0.0050


def test_bf16_sampling_model_runs_and_is_closer_to_fp32():
    cfg = tiny_wan_config()
    _, model = wan_pair(cfg, seed=1)
    inp = wan_fixed_input(cfg, text_len=7, seed=2)
    want = run_wan(model, cfg, inp)
    errors = {}
    for name, cast in (("islands", cast_model), ("plain", lambda m, d: m.to(d))):
        low = cast(copy.deepcopy(model), torch.bfloat16)
        got = run_wan(low, cfg, inp.to("cpu", torch.bfloat16)).float()
        errors[name] = float((got - want).norm() / want.norm())
    assert errors["islands"] < 0.02
    assert errors["islands"] < errors["plain"], errors  # 0.011 < 0.018
