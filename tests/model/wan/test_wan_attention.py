"""SPEC §8.3 on Wan: every attention backend gives the dense reference's output and gradients on
a packed batch with cross-attention windows, for both masks (and the isolated baseline).

On CPU: `flex` forward (torch has no CPU flex backward) and the `flash-varlen` ghost-segment plan
run through the varlen emulator, forward and backward. On a GPU: both real kernels in bf16."""

import dataclasses
import warnings

import pytest
import torch

from lct_train.model.attention.varlen import emulate_varlen, ghost_plan, run_plan
from lct_train.model.layout import SceneSpec
from lct_train.model.wan import wan_scene
from tests.model.wan.wan_testutils import meta_for, random_wan_inputs, run, tiny_wan_model

BATCH = [
    wan_scene([(2, (1, 2, 2)), (3, (2, 1, 2)), (1, (1, 2, 1))], global_text=4),
    wan_scene([(4, (1, 2, 3))]),
    wan_scene([(1, (1, 1, 2)), (2, (1, 2, 2))], global_text=2),
]
MASKS = ["bidirectional", "causal", "isolated"]


class EmulatedVarlen:
    """The flash-varlen backend's plan on the CPU emulator of the kernel."""

    name = "varlen-emulated"

    def plan(self, intervals):
        return ghost_plan(intervals)

    def __call__(self, q, k, v, plan):
        return run_plan(emulate_varlen, q, k, v, plan)


def _fwd_bwd(model, meta, inputs):
    model.zero_grad()
    out = run(model, meta, *inputs)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype)
    (out * weights.view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def model():
    return tiny_wan_model(attn_backend="reference")


@pytest.mark.parametrize("mask", MASKS)
def test_flex_forward_equals_reference(model, mask):
    meta = meta_for(model.cfg, BATCH, mask=mask)
    inputs = random_wan_inputs(model.cfg, meta)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()"
        expected = run(model, meta, *inputs)
        model.cfg.attn_backend = "flex"
        try:
            got = run(model, meta, *inputs)
        finally:
            model.cfg.attn_backend = "reference"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["bidirectional", "causal", "isolated", "kv-cache"])
def test_varlen_plan_forward_and_gradients_equal_reference(model, monkeypatch, case):
    if case == "kv-cache":  # the last shot against cached history (forward only: a cache is
        full = BATCH[0]    # inference), self- and cross-attention plans over cache + new
        cache = model.new_kv_cache()
        cache.write = True
        with torch.no_grad():
            for g in range(3):
                meta = meta_for(model.cfg, [SceneSpec(full.groups[g:g + 1])], mask="causal",
                                cached=cache.spec)
                run(model, meta, *random_wan_inputs(model.cfg, meta, seed=g), kv_cache=cache)
                cache.commit()
        meta = meta_for(model.cfg, [SceneSpec(full.groups[3:])], mask="causal", cached=cache.spec)
        inputs = random_wan_inputs(model.cfg, meta)
        with torch.no_grad():
            cache.write = False
            expected = run(model, meta, *inputs, kv_cache=cache)
            monkeypatch.setattr("lct_train.model.wan.model.get_backend",
                                lambda *args: EmulatedVarlen())
            got = run(model, meta, *inputs, kv_cache=cache)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        return
    meta = meta_for(model.cfg, BATCH, mask=case)
    inputs = random_wan_inputs(model.cfg, meta)
    expected = _fwd_bwd(model, meta, inputs)
    monkeypatch.setattr("lct_train.model.wan.model.get_backend", lambda *args: EmulatedVarlen())
    got = _fwd_bwd(model, meta, inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert len(ghost_plan(meta.cross_attn).calls) == 1  # all windows in one varlen call


def bf16_backend_against_reference(backend, mask: str, device: str, repeat: int,
                                   monkeypatch) -> None:
    """The bf16 model (what FSDP's mixed precision runs) with ``backend`` (a name, or a backend
    object) vs the same bf16 model on the reference backend: output and every parameter's
    gradient, relative to their size."""
    # head_dim 16: flash kernels take multiples of 8, flex powers of 2
    model = tiny_wan_model(attn_backend="reference", head_dim=16).to(device, torch.bfloat16)
    meta = meta_for(model.cfg, BATCH * repeat, mask=mask, device=device)
    video, text, t = (x.to(device) for x in random_wan_inputs(model.cfg, meta))
    inputs = [video.bfloat16(), text.bfloat16(), t]
    expected = _fwd_bwd(model, meta, inputs)
    if isinstance(backend, str):
        monkeypatch.setattr(model, "cfg", dataclasses.replace(model.cfg, attn_backend=backend))
    else:
        monkeypatch.setattr("lct_train.model.wan.model.get_backend", lambda *args: backend)
    got = _fwd_bwd(model, meta, inputs)
    error = float((got[0] - expected[0]).float().abs().max() / expected[0].float().abs().max())
    assert error <= 2e-2, error
    # gradients: the whole vector, and each parameter's (relative to at least 1 % of the
    # whole: a key bias's gradient is nearly 0 in exact arithmetic, its bf16 error is not)
    want = torch.cat([g.float().flatten() for g in expected[1].values()])
    diff = torch.cat([(got[1][n].float() - g.float()).flatten() for n, g in expected[1].items()])
    assert float(diff.norm() / want.norm()) <= 2e-2, float(diff.norm() / want.norm())
    for name, grad in expected[1].items():
        floor = max(float(grad.float().norm()), 1e-2 * float(want.norm()))
        error = float((got[1][name].float() - grad.float()).norm()) / floor
        assert error <= 5e-2, (name, error)


def test_bf16_varlen_plan_on_cpu(monkeypatch):
    bf16_backend_against_reference(EmulatedVarlen(), "causal", "cpu", 1, monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "flash-varlen"])
@pytest.mark.parametrize("mask", MASKS)
def test_gpu_backend_equals_reference_bf16(backend, mask, monkeypatch):
    bf16_backend_against_reference(backend, mask, "cuda", 20, monkeypatch)
