"""What the memory estimator will run on Wan: the 1.3B preset's widths (2 of its 30 blocks) built
on meta, forward and backward on fake tensors (shapes only) with torch's flash-varlen fake
kernel, kernel plans built on the host first (they read host ints)."""

import dataclasses

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from lct_train.model.attention import get_backend
from lct_train.model.wan import WanConfig, WanModel, build_wan_meta, wan_scene
from tests.testutils import PRESETS


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_preset_forward_backward_on_fake_tensors(mask):
    cfg = dataclasses.replace(WanConfig.from_yaml(PRESETS / "wan2.1-1.3b.yaml"), num_layers=2,
                              attn_backend="flash-varlen")
    spec = wan_scene([(100, (3, 6, 8)), (40, (1, 6, 8))], global_text=200)
    meta = build_wan_meta([spec], text_len=cfg.text_len, mask=mask)
    backend = get_backend("flash-varlen", torch.device("cuda"), mask == "causal")
    meta.attn.plan_for(backend)
    meta.cross_attn.plan_for(backend)
    torch.set_default_dtype(torch.bfloat16)  # the parameters as FSDP's bf16 policy holds them
    try:
        with torch.device("meta"):
            model = WanModel(cfg)
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = model.to_empty(device="cpu")
            video = torch.randn(meta.num_video, cfg.patch_dim)
            text = torch.randn(meta.num_text, cfg.text_dim)
            out = model(video, text, None, torch.rand(3, dtype=torch.float32), meta)
            out.float().square().mean().backward()
            grads = [p.grad for p in model.parameters()]
    finally:
        torch.set_default_dtype(torch.float32)
    assert tuple(out.shape) == (meta.num_video, cfg.patch_dim)
    assert out.dtype == torch.bfloat16
    assert all(g is not None for g in grads)
