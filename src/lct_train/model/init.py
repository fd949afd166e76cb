"""From-scratch weight initialisation of `LCTModel` (DiT / adaLN-zero convention).

Linear layers get Xavier-uniform weights and zero biases; every modulation projection (the
adaLN-zero shift/scale/gate producers, the refiner gates, the final norm) and the output
projection start at zero, so each block starts as the identity and the first prediction is 0.
Timestep/guidance embedders use a small normal init; norm affine weights are 1, their biases 0
(PyTorch's defaults, stated here so that a model built on the meta device is fully covered).
Imported weights never go through this.

The rules are an *init plan* (`init_plan`): every parameter once, in module order, with the
function that fills it. `init_weights` applies it in place to a bare model; a sharded model is
filled parameter by parameter from full-size values (`lct_train.parallel.parallelize.
init_sharded`), which gives the same weights as `init_weights` on one process, whatever the
world size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lct_train.model.layers import AdaLayerNormContinuous, AdaLayerNormZero, TimestepEmbedding
from lct_train.model.refiner import RefinerGate

EMBEDDER_INIT_STD = 0.02
# Fills a tensor in place from an (optional) generator.
Initializer = Callable[[torch.Tensor, torch.Generator | None], object]


def _xavier(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.xavier_uniform_(t, generator=gen)


def _embedder_normal(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.normal_(t, std=EMBEDDER_INIT_STD, generator=gen)


def _zeros(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.zeros_(t)


def _ones(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.ones_(t)


def init_plan(model: nn.Module) -> list[tuple[str, nn.Parameter, Initializer]]:
    """``(name, parameter, initializer)`` for every parameter of ``model``, in module order.

    Raises ``ValueError`` naming any parameter no rule covers (a new layer type must get one:
    after ``to_empty`` it would otherwise hold uninitialised memory).
    """
    rules: dict[nn.Parameter, Initializer] = {}

    def rule(param: nn.Parameter | None, fn: Initializer) -> None:
        if param is not None:
            rules[param] = fn  # a later rule overrides, the position stays the first one

    for module in model.modules():
        if isinstance(module, nn.Linear):
            rule(module.weight, _xavier)
            rule(module.bias, _zeros)
        elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
            rule(module.weight, _ones)
            rule(getattr(module, "bias", None), _zeros)
    for module in model.modules():
        if isinstance(module, TimestepEmbedding):
            for linear in (module.linear_1, module.linear_2):
                rule(linear.weight, _embedder_normal)
        if isinstance(module, AdaLayerNormZero | AdaLayerNormContinuous | RefinerGate):
            rule(module.linear.weight, _zeros)
            rule(module.linear.bias, _zeros)
    for module in model.modules():  # layers that declare their own rules (LoRA adapters)
        for param, fn in getattr(module, "init_rules", list)():
            rule(param, fn)
    output = getattr(model, "proj_out", None)
    if isinstance(output, nn.Linear):
        rule(output.weight, _zeros)
        rule(output.bias, _zeros)
    names = {p: n for n, p in model.named_parameters()}
    uncovered = [n for p, n in names.items() if p not in rules]
    if uncovered:
        raise ValueError(f"init_plan: no initialisation rule for {uncovered}")
    return [(names[p], p, fn) for p, fn in rules.items()]


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise a bare (unsharded) ``model`` in place, drawing from ``generator`` (default:
    the global RNG). For an FSDP-sharded model use ``parallelize.init_sharded``."""
    for _, param, fn in init_plan(model):
        fn(param, generator)
