"""LoRA adapters on the bare model (``lct_train.model.lora``): names, B = 0 start, merge."""

import pytest
import torch

from lct_train.model.attention import get_backend
from lct_train.model.blocks import BlockContext
from lct_train.model.init import init_weights
from lct_train.model.layout import build_packed_meta
from lct_train.model.lora import (
    LoRALinear,
    apply_lora,
    freeze_base,
    is_adapter,
    match_targets,
    merge_lora,
    unwrap_lora,
)
from lct_train.model.mmdit import LCTModel
from lct_train.model.rope import rope_cos_sin
from tests.model.model_testutils import random_inputs, scene
from tests.testutils import tiny_config

RANK, ALPHA = 4, 8.0


def random_model(seed: int = 0) -> LCTModel:
    """The tiny model with every weight random (adaLN-zero would hide the blocks)."""
    torch.manual_seed(seed)
    model = LCTModel(tiny_config(attn_backend="reference"))
    init_weights(model)
    for p in model.parameters():
        p.data.normal_(std=0.2)
    return model.double()


def forward(model, seed=1):
    meta = build_packed_meta([scene((3, (1, 2, 2)), (2, (2, 1, 2))), scene((2, (1, 2, 1)))],
                             mask="bidirectional")
    with torch.no_grad():
        return model(*random_inputs(model.cfg, meta, seed), meta)


def test_default_targets_are_the_block_projections_and_mlps_with_base_names_kept():
    model = random_model()
    base_keys = set(model.state_dict())
    names, _ = match_targets(model, LCTModel.lora_targets)
    assert "transformer_blocks.0.attn.to_out.0" in names
    assert "transformer_blocks.1.ff_context.net.0.proj" in names
    assert "single_transformer_blocks.0.proj_out" in names
    assert not any(n.startswith("context_embedder") or n == "proj_out" for n in names)
    # 2 dual blocks x (8 attention + 4 MLP) + 1 single block x (3 + 2)
    assert len(names) == 2 * 12 + 5
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    keys = set(model.state_dict())
    assert {k for k in keys if not is_adapter(k)} == base_keys
    assert {k for k in keys if is_adapter(k)} == {
        f"{n}.lora_{ab}.weight" for n in names for ab in "AB"}


def test_fresh_adapters_give_exactly_the_base_model():
    base = random_model()
    want = forward(base)
    model = random_model()
    names, _ = match_targets(model, LCTModel.lora_targets)
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    for m in model.modules():  # the init rules: A Kaiming-uniform, B zero
        if isinstance(m, LoRALinear):
            for param, fn in m.init_rules():
                fn(param.data, None)
            assert m.lora_A.weight.abs().sum() > 0
            assert not m.lora_B.weight.any()
    model.double()
    assert torch.equal(forward(model), want)


def test_merge_equals_the_adapted_forward_and_unwrap_restores_plain_layers():
    model = random_model()
    names, _ = match_targets(model, LCTModel.lora_targets)
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    model.double()
    for name, p in model.named_parameters():
        if is_adapter(name):
            p.data.normal_(std=0.1)
    want = forward(model)
    assert not torch.allclose(want, forward(random_model()))  # the adapters do something
    merge_lora(model)
    unwrap_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(forward(model), want, rtol=1e-10, atol=1e-10)


def test_freeze_base_keeps_adapters_trainable_fp32():
    model = LCTModel(tiny_config())
    names, _ = match_targets(model, [r"transformer_blocks\.0\.attn\.to_q"])
    assert names == ["transformer_blocks.0.attn.to_q"]
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    freeze_base(model, torch.bfloat16)
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"transformer_blocks.0.attn.to_q.lora_A.weight": torch.float32,
                         "transformer_blocks.0.attn.to_q.lora_B.weight": torch.float32}
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters()
               if not p.requires_grad)


@pytest.mark.parametrize("pattern", ["to_q", r"transformer_blocks\.9\.attn\.to_q"])
def test_a_pattern_that_matches_nothing_is_reported(pattern):
    _, unmatched = match_targets(LCTModel(tiny_config()), [r".*\.to_k", pattern])
    assert unmatched == [1]


def test_compiled_adapted_block_gives_the_eager_output_and_adapter_grads():
    """One dual-stream block with adapters, frozen base, through torch.compile (aot_eager:
    dynamo + autograd tracing, fullgraph): the eager output and adapter gradients."""
    torch._dynamo.reset()
    model = random_model().float()
    names, _ = match_targets(model, LCTModel.lora_targets)
    apply_lora(model, [n for n in names if n.startswith("transformer_blocks.0.")], RANK, ALPHA,
               dropout=0.0)
    freeze_base(model, torch.float32)
    block = model.transformer_blocks[0]
    for name, p in block.named_parameters():
        if is_adapter(name):
            p.data.normal_(std=0.1)
    cfg = model.cfg
    meta = build_packed_meta([scene((2, (1, 2, 2)), (3, (1, 1, 2)))], mask="causal")
    cos, sin = rope_cos_sin(meta.rope_coords, meta.rope_rotate, cfg.rope_axes_dim, cfg.rope_theta)
    ctx = BlockContext(meta, cos, sin, get_backend("reference", torch.device("cpu"), causal=True))
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(meta.num_video, cfg.hidden_size, generator=gen),
              torch.randn(meta.num_text, cfg.hidden_size, generator=gen),
              torch.randn(meta.num_groups, cfg.hidden_size, generator=gen))

    def run(fn):
        block.zero_grad(set_to_none=True)
        video, text = fn(*inputs, ctx)
        (video.square().sum() + text.square().sum()).backward()
        return video.detach(), {n: p.grad for n, p in block.named_parameters() if p.requires_grad}

    want, want_grads = run(block)
    got, got_grads = run(torch.compile(block, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(got, want)
    assert len(want_grads) == 24  # 12 adapted layers
    for name, grad in want_grads.items():
        assert grad is not None, name
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got_grads[name], grad, msg=name)


def test_flops_of_a_lora_model_drop_the_base_weight_gradients():
    """A frozen base Linear costs forward + input gradient (2x), adapters the full 3x on the
    rows of the layer they adapt."""
    from lct_train.train.flops import FlopCounter

    cfg = tiny_config()
    meta = build_packed_meta([scene((3, (1, 2, 2)))], mask="bidirectional")
    full = FlopCounter(LCTModel(cfg), cfg)
    model = LCTModel(cfg)
    names, _ = match_targets(model, [r"transformer_blocks\.0\.attn\.to_q"])
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    freeze_base(model, torch.float32)
    lora = FlopCounter(model, cfg)
    adapter = 2 * RANK * (cfg.hidden_size + cfg.hidden_size) * meta.num_video
    assert lora.forward_flops(meta) == full.forward_flops(meta) + adapter
    assert lora.train_flops(meta) == 3 * lora.forward_flops(meta) - full.linear_flops(meta)
