"""Under FSDP2 mixed precision (bf16 params, blocks cast their inputs) the per-batch metadata
reaches every block untouched: the attention plans are built once per batch and RoPE runs in
fp32, as in sampling. One process, a 1-rank gloo group, CPU."""


import pytest
import torch
import torch.distributed as dist

import lct_train.model.blocks as blocks_mod
from lct_train.config.schema import ParallelConfig
from lct_train.model.attention.reference import ReferenceAttention
from lct_train.model.layout import build_packed_meta
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import parallelize
from lct_train.train.optim import clip_grad_norm
from tests.model.model_testutils import random_inputs, scene
from tests.testutils import tiny_config

BF16 = ParallelConfig(activation_checkpoint="none", param_dtype="bfloat16", reduce_dtype="float32")


@pytest.fixture
def one_rank_group(tmp_path):
    assert not dist.is_initialized()
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield build_mesh("cpu", mesh_shape(1, 1, -1, 1))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_block_inputs_are_not_copied_or_cast(one_rank_group, monkeypatch, mask):
    cfg = tiny_config(attn_backend="reference")
    assert cfg.num_refiner_blocks > 0
    assert cfg.num_single_blocks > 0
    model = parallelize(LCTModel(cfg), one_rank_group, BF16)

    plans = []
    build_plan = ReferenceAttention.plan
    monkeypatch.setattr(ReferenceAttention, "plan",
                        lambda self, iv: plans.append(iv) or build_plan(self, iv))
    rope_dtypes = []
    apply_rope = blocks_mod.apply_rope
    monkeypatch.setattr(blocks_mod, "apply_rope",
                        lambda x, cos, sin: rope_dtypes.append(cos.dtype) or apply_rope(x, cos, sin))

    meta = build_packed_meta([scene((4, (1, 2, 2)), (2, (2, 2, 2))), scene((3, (1, 1, 2)))],
                             mask=mask, text_rope=cfg.text_rope)
    video, text, pooled, t = random_inputs(cfg, meta, dtype=torch.float32)
    out = model(video.bfloat16(), text.bfloat16(), pooled.bfloat16(), t, meta)
    assert out.dtype == torch.bfloat16

    # One plan per interval set (joint mask, refiner text mask), not one per block.
    assert len(plans) == 2
    assert {id(iv) for iv in plans} == {id(meta.attn), id(meta.text_attn)}
    # RoPE on q and k of every attention layer, always in fp32.
    layers = cfg.num_dual_blocks + cfg.num_single_blocks
    assert rope_dtypes == [torch.float32] * (2 * layers)

    # The clipped gradient norm is the global one, and clipping uses it.
    out.float().square().mean().backward()
    grads = [p.grad.full_tensor().float() for p in model.parameters() if p.grad is not None]
    want = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    max_norm = float(want) / 4
    got = clip_grad_norm(model, max_norm)
    assert not hasattr(got, "full_tensor")  # a plain tensor
    torch.testing.assert_close(got.float(), want, rtol=1e-5, atol=0)
    clipped = [p.grad.full_tensor().float() for p in model.parameters() if p.grad is not None]
    clipped_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                         for g in clipped]))
    torch.testing.assert_close(clipped_norm, torch.tensor(max_norm), rtol=1e-2, atol=0)
