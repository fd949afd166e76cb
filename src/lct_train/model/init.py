"""From-scratch weight initialisation of `LCTModel` (DiT / adaLN-zero convention).

Linear layers get Xavier-uniform weights and zero biases; every modulation projection (the
adaLN-zero shift/scale/gate producers, the refiner gates, the final norm) and the output
projection start at zero, so each block starts as the identity and the first prediction is 0.
Timestep/guidance embedders use a small normal init. Imported weights never go through this.
"""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.layers import AdaLayerNormContinuous, AdaLayerNormZero, TimestepEmbedding
from lct_train.model.refiner import RefinerGate

EMBEDDER_INIT_STD = 0.02


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Initialise ``model`` in place (works on FSDP-sharded DTensor parameters too)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, TimestepEmbedding):
            for linear in (module.linear_1, module.linear_2):
                nn.init.normal_(linear.weight, std=EMBEDDER_INIT_STD)
        if isinstance(module, AdaLayerNormZero | AdaLayerNormContinuous | RefinerGate):
            nn.init.zeros_(module.linear.weight)
            nn.init.zeros_(module.linear.bias)
    output = getattr(model, "proj_out", None)
    if isinstance(output, nn.Linear):
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
