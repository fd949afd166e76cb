"""One dual-stream block traces with torch.compile(fullgraph=True) on the reference path."""

import torch

from lct_train.model.attention import get_backend
from lct_train.model.blocks import BlockContext
from lct_train.model.layout import build_packed_meta
from lct_train.model.mmdit import LCTModel
from lct_train.model.rope import rope_cos_sin
from tests.model.model_testutils import scene
from tests.testutils import tiny_config


def test_compile_one_block_without_graph_break():
    torch._dynamo.reset()
    cfg = tiny_config(attn_backend="reference")
    block = LCTModel(cfg).transformer_blocks[0]
    meta = build_packed_meta([scene((2, (1, 2, 2)), (3, (1, 1, 2)))], mask="causal")
    cos, sin = rope_cos_sin(meta.rope_coords, meta.rope_rotate, cfg.rope_axes_dim, cfg.rope_theta)
    ctx = BlockContext(meta, cos, sin, get_backend("reference", torch.device("cpu"), causal=True))
    dim = cfg.hidden_size
    video, text = torch.randn(meta.num_video, dim), torch.randn(meta.num_text, dim)
    temb = torch.randn(meta.num_groups, dim)
    # fullgraph=True raises on any graph break; the "eager" backend keeps the test quick
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    got = compiled(video, text, temb, ctx)
    expected = block(video, text, temb, ctx)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_regional_compile_is_one_graph_per_block_kind_whatever_the_depth_and_length():
    """`apply_compile` on 4 dual + 2 single blocks (+ the refiner block): one graph per block
    kind, one more per kind when the lengths first change (dynamic shapes), none after. A block
    that read its layer index, or a host-int shape check, would compile per layer or per
    length and hit dynamo's recompile limit on a deep model."""
    from torch._dynamo.utils import counters

    from lct_train.parallel.parallelize import apply_compile

    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_config(attn_backend="reference", num_dual_blocks=4, num_single_blocks=2)
    model = LCTModel(cfg)
    apply_compile(model, "eager")
    kinds = 3  # dual, single, refiner
    graphs = []
    for grids in (((1, 2, 2), (1, 1, 2)), ((1, 2, 4), (1, 2, 2)), ((2, 2, 2), (1, 4, 2)),
                  ((1, 4, 4), (2, 2, 2))):
        meta = build_packed_meta([scene((2, grids[0]), (3, grids[1]))], mask="bidirectional")
        model(torch.randn(meta.num_video, cfg.patch_dim), torch.randn(meta.num_text, cfg.text_dim),
              torch.randn(meta.num_groups, cfg.pooled_dim), torch.rand(meta.num_groups), meta)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] == kinds
    assert graphs[1] <= 2 * kinds
    assert graphs[3] == graphs[2] == graphs[1]  # new lengths, no new graph
