"""The MFU FLOP count: attention pairs under the mask, Linear FLOPs vs torch's flop counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lct_train.config.store import compose_config
from lct_train.model.family import build_model
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.train.flops import FlopCounter, attended_pairs

LINEAR_OPS = ("addmm", "mm")


def tiny(preset="tiny"):
    return compose_config([f"model={preset}"]).model


def specs(cfg):
    return [SceneSpec((GroupSpec(3, cfg.dummy_grid, is_global=True), GroupSpec(4, (1, 2, 3)),
                       GroupSpec(2, (2, 2, 2)))),
            SceneSpec((GroupSpec(5, (1, 2, 2)),))]


def dense_pairs(attn):
    cols = torch.arange(attn.num_k)
    mask = (cols[None] >= attn.lo[:, None].long()) & (cols[None] < attn.hi[:, None].long())
    return int(mask.sum())


def test_attended_pairs_match_the_dense_mask():
    cfg = tiny()
    for mask in ("bidirectional", "causal"):
        meta = build_packed_meta(specs(cfg), mask=mask, text_rope=cfg.text_rope)
        assert attended_pairs(meta.attn) == dense_pairs(meta.attn)
        assert attended_pairs(meta.text_attn) == dense_pairs(meta.text_attn)
    bi = build_packed_meta(specs(cfg), mask="bidirectional", text_rope=cfg.text_rope)
    causal = build_packed_meta(specs(cfg), mask="causal", text_rope=cfg.text_rope)
    assert attended_pairs(causal.attn) < attended_pairs(bi.attn)


@pytest.mark.parametrize("preset", ["tiny", "tiny-wan"])
def test_linear_flops_match_torch_flop_counter(preset):
    cfg = tiny(preset)
    torch.manual_seed(0)
    model = build_model(cfg)
    counter = FlopCounter(model, cfg)
    meta = cfg.build_meta(specs(cfg))
    pooled = torch.randn(meta.num_groups, cfg.pooled_dim) if cfg.takes_pooled else None
    with FlopCounterMode(display=False) as mode, torch.no_grad():
        model(torch.randn(meta.num_video, cfg.patch_dim), torch.randn(meta.num_text, cfg.text_dim),
              pooled, torch.rand(meta.num_groups), meta)
    counts = mode.get_flop_counts()["Global"]
    measured = sum(v for op, v in counts.items() if str(op).split(".")[1] in LINEAR_OPS)
    assert counter.linear_flops(meta) == measured
    assert counter.train_flops(meta) == 3 * counter.forward_flops(meta)
