"""From-scratch initialisation: blocks start as the identity and the first prediction is zero."""

import torch

from lct_train.model import LCTModel, build_packed_meta
from lct_train.model.init import init_weights
from tests.model.model_testutils import random_inputs, scene
from tests.testutils import tiny_config


def test_init_zero_output_then_learns():
    cfg = tiny_config()
    model = LCTModel(cfg).double()
    init_weights(model)
    meta = build_packed_meta([scene((4, (2, 2, 2)), (3, (1, 2, 2)))], mask="bidirectional")
    inputs = random_inputs(cfg, meta)
    out = model(*inputs, meta)
    assert torch.count_nonzero(out) == 0

    # Every block is the identity at init: the video stream reaching the final norm is the patch
    # embedding itself.
    seen = {}

    def keep_input(_module, args):
        seen["x"] = args[0]

    model.norm_out.register_forward_pre_hook(keep_input)
    model(*inputs, meta)
    embedded = model.x_embedder(inputs[0].masked_fill((meta.video_shot < 0)[:, None], 0.0))
    torch.testing.assert_close(seen["x"], embedded)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    target = torch.randn_like(out)
    for _ in range(2):
        opt.zero_grad()
        loss = (model(*inputs, meta) - target).square().mean()
        loss.backward()
        opt.step()
    gate = model.transformer_blocks[0].norm1.linear.weight
    assert torch.count_nonzero(gate) > 0, "adaLN-zero gates must leave zero after two steps"
    assert torch.count_nonzero(model(*inputs, meta)) > 0
