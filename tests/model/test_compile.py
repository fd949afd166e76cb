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
