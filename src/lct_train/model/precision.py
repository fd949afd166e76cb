"""fp32 islands: the parameters a model keeps in fp32 when it computes in a lower precision.

A model declares ``keep_in_fp32``: names of modules or parameters, diffusers'
``_keep_in_fp32_modules`` of the same transformer (Wan: the timestep embedder, every modulation
table and the block norms; HunyuanVideo: none). A parameter is an island when a component of its
FQN is one of those names (diffusers matches substrings of the name; on these trees that is the
same set). Two consumers, one rule:

* `cast_model(model, dtype)`: ``model.to(dtype)`` that leaves the islands fp32, as diffusers'
  ``from_pretrained(torch_dtype=...)`` does (single-device sampling).
* ``lct_train.parallel.parallelize.apply_fsdp``: FSDP2 units of one precision each
  (`precision_units`), the islands' gathered in fp32 under a bf16 ``param_dtype``.
"""

from __future__ import annotations

import torch
from torch import nn

from lct_train.core.fqn import clean_fqn


def is_island(model: nn.Module, fqn: str) -> bool:
    """Whether the parameter ``fqn`` of ``model`` is kept in fp32."""
    keep = set(getattr(model, "keep_in_fp32", ()))
    return bool(keep) and not keep.isdisjoint(clean_fqn(fqn).split("."))


def island_names(model: nn.Module) -> list[str]:
    """The (clean) FQNs of ``model``'s fp32-island parameters."""
    return [clean_fqn(n) for n, _ in model.named_parameters() if is_island(model, n)]


@torch.no_grad()
def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Floating parameters and buffers to ``dtype`` in place, the islands to fp32; returns
    ``model``. Each tensor is cast once from its stored value (no round trip through
    ``dtype``)."""
    for prefix, module in model.named_modules():
        for key, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                want = torch.float32 if is_island(model, f"{prefix}.{key}") else dtype
                param.data = param.data.to(want)
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[key] = buffer.to(dtype)
    return model


def precision_units(model: nn.Module, root: nn.Module
                    ) -> tuple[bool, list[nn.Module], list[nn.Module]]:
    """How to shard ``root`` (a block, or the model) so that every FSDP unit holds parameters of
    one precision: ``(root_fp32, low, fp32)``. ``root``'s own unit holds its direct parameters,
    those of submodules mixing both kinds (split further) and of the submodules of its own
    precision; ``low`` / ``fp32`` are the submodules of the other precision, each a unit (they
    must be called through their ``forward``: FSDP's hooks gather their parameters). ``root``'s
    unit is fp32 when the parameters held directly (by it or by mixed submodules) are all
    islands. Blocks of ``model.block_lists()`` under ``root`` are units of their own: skipped."""
    blocks = {id(b) for lst in model.block_lists() for b in [lst, *lst]}
    names = {id(p): n for n, p in model.named_parameters()}
    own, low, fp32 = [], [], []

    def kinds(module: nn.Module) -> set[bool]:
        return {is_island(model, names[id(p)]) for p in module.parameters()}

    def visit(module: nn.Module) -> None:
        own.extend(is_island(model, names[id(p)]) for p in module.parameters(recurse=False))
        for child in module.children():
            found = set() if id(child) in blocks else kinds(child)
            if found == {False}:
                low.append(child)
            elif found == {True}:
                fp32.append(child)
            elif found:
                visit(child)

    visit(root)
    if len(set(own)) > 1:
        raise ValueError(f"{type(root).__name__}: holds parameters of both precisions outside "
                         "submodules of one precision; its fp32 islands cannot be sharded apart")
    root_fp32 = own[:1] == [True]
    return root_fp32, (low if root_fp32 else []), ([] if root_fp32 else fp32)
