"""lct-estimate: against a real run, its output contract, its errors, gradient accumulation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lct_train.estimate.cli import estimate, main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model=tiny", "estimate.frame=[4,4]", "estimate.text_len=16", "estimate.gpu_gb=1"]


def _check_module():
    spec = importlib.util.spec_from_file_location("estimate_check",
                                                  ROOT / "bench" / "estimate_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [
    ["model=tiny", "estimate.tokens=1200", "estimate.shots=3"],
    ["model=small", "estimate.tokens=600", "estimate.shots=2", "optim.grad_accum=2"],
    ["model=tiny", "estimate.tokens=1200", "estimate.shots=3", "finetune=lora",
     "optim.ema_decay=0"],
    ["model=tiny-wan", "estimate.tokens=1200", "estimate.shots=3", "estimate.text_len=12"],
])
@pytest.mark.slow
def test_estimate_matches_real_two_rank_run(args):
    """Fake tensors + fake process group vs real tensors in a real 2-rank gloo job."""
    result = _check_module().compare(args)
    est, real = result["rows"]["peak"]
    assert result["rel_error"] < 0.10, result["rows"]
    assert result["rows"]["parameters"][0] == result["rows"]["parameters"][1]
    assert est > 0
    assert real > 0


def test_last_line_is_json_and_verdict(capsys):
    status = main([*TINY, "estimate.world_size=8", "estimate.tokens=1200", "estimate.shots=3"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    for key in ("peak_bytes", "gpu_bytes", "fits", "tokens_per_rank", "world_size"):
        assert key in result
    assert result["world_size"] == 8
    assert result["gpu_bytes"] == 10**9
    assert result["fits"] is True
    assert status == 0
    assert result["tokens"] <= 1200
    assert result["tokens_per_rank"] == result["tokens"]
    assert result["peak_bytes"] == sum(result["categories"].values())
    # The same run on a GPU far too small: the verdict flips, exit status 1.
    assert main([*TINY, "estimate.world_size=8", "estimate.tokens=1200", "estimate.shots=3",
                 "estimate.gpu_gb=0.001"]) == 1


@pytest.mark.slow
def test_lora_counts_a_frozen_base_and_the_adapters_state():
    """finetune=lora: the base held in the compute dtype with no gradient or AdamW state; the
    adapters (fp32) carry them."""
    args = ["model=small", "estimate.gpu_gb=80", "estimate.world_size=1", "estimate.tokens=800",
            "estimate.frame=[8,8]",
            "parallel.param_dtype=bfloat16"]
    full = estimate(args)
    lora = estimate([*args, "finetune=lora", "finetune.rank=4"])
    assert lora["finetune"] == "lora"
    assert lora["params"] > full["params"] > 20 * lora["trainable_params"]
    ratio = lora["trainable_params"] / full["params"]
    cats, full_cats = lora["categories"], full["categories"]
    # AdamW: two fp32 moments per trained parameter (+ the step counters)
    assert cats["optimizer_states"] == pytest.approx(
        full_cats["optimizer_states"] * ratio, rel=0.05)
    assert cats["optimizer_states"] > 0
    assert cats["gradients"] < full_cats["gradients"] * 4 * ratio + 1e6
    # the sharded base in bf16 (half the fp32 master of the full run), plus fp32 adapters
    assert cats["parameters"] < 0.75 * full_cats["parameters"]


@pytest.mark.slow
def test_sharding_divides_parameter_state():
    one, eight = (estimate([*TINY, f"estimate.world_size={n}", "estimate.tokens=800"])
                  for n in (1, 8))
    for cat in ("optimizer_states",):
        assert one["categories"][cat] == pytest.approx(8 * eight["categories"][cat], rel=0.02)


@pytest.mark.parametrize(("args", "key"), [
    (["estimate.tokens=10", "estimate.shots=3"], "estimate.tokens"),
    (["estimate.tokens=800", "estimate.grid=[1,4,4]"], "estimate.tokens"),
    (["estimate.tokens=800", "estimate.world_sise=8"], "estimate.world_sise"),
    (["estimate.tokens=800", "estimate.attention=dense"], "estimate.attention"),
    (["estimate.tokens=800", "parallel.dp_replicate=3", "estimate.world_size=8"],
     "parallel.dp_replicate"),
    (["estimate.tokens=800", "estimate.world_size=2", "stage.mask=isolated"],
     "estimate.attention"),
])
def test_impossible_estimates_name_the_key(args, key, capsys):
    assert main([*TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert key in err, err


def test_wan_prompts_must_fit_the_text_window(capsys):
    """tiny-wan's window is 24 tokens: a global + own prompt of 16 each does not fit."""
    assert main(["model=tiny-wan", *TINY[1:], "estimate.tokens=800"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lct-estimate: error: estimate.text_len: 16 tokens"), err
    assert "text window of 24" in err


def test_no_gpu_memory_named():
    assert main(["model=tiny", "estimate.tokens=800"]) == 2


@pytest.mark.slow
def test_grad_accum_costs_one_micro_batch_at_most():
    """Gradients stay sharded under accumulation: grad_accum=4 costs no more than
    grad_accum=1 beyond one micro-batch's activations, and the gradients at the peak are the
    sharded ones (1/8 of fp32 parameters at 8 ranks). Deferring the sync holds the whole
    model's unsharded fp32 gradients instead (the tracker files them under temporaries)."""
    base = [*TINY, "estimate.world_size=8", "estimate.tokens=800"]
    one = estimate([*base, "optim.grad_accum=1"])
    four = estimate([*base, "optim.grad_accum=4"])
    deferred = estimate([*base, "optim.grad_accum=4", "parallel.defer_grad_sync=true"])
    assert four["peak_bytes"] <= one["peak_bytes"] + one["categories"]["activations"]
    assert four["categories"]["gradients"] <= one["params"] * 4 / 8 * 1.05
    extra = deferred["peak_bytes"] - four["peak_bytes"]
    assert extra == pytest.approx(one["params"] * 4 * (1 - 1 / 8), rel=0.05)


@pytest.mark.parametrize("args", [
    ["estimate.world_size=4", "estimate.tokens=800", "optim.grad_accum=2"],
    ["estimate.world_size=4", "estimate.tokens=800", "parallel.sp_degree=2"],
])
@pytest.mark.slow
def test_peak_tracker_equals_stock_tracker(args):
    """The estimator's tracker drops only per-module peaks: every category at the peak is the
    stock ``FSDPMemTracker``'s, byte for byte."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    from lct_train.estimate import run
    from lct_train.estimate.cli import prepare

    cfg, est, _ = prepare([*TINY, *args])
    peaks = []
    for tracker_cls in (run.PeakTracker, FSDPMemTracker):
        run.fake_process_group(est.world_size)
        try:
            peaks.append(run.measure(cfg, est, tracker_cls=tracker_cls).categories)
        finally:
            run.shutdown()
    assert peaks[0] == peaks[1]
    assert peaks[0]["Total"] > 0
