"""Low-rank adapters (LoRA) on the ``nn.Linear`` layers of any model, chosen by name pattern.

``apply_lora(model, targets, rank, alpha, dropout)`` replaces, in place, every ``nn.Linear``
whose FQN full-matches one of the regular expressions ``targets`` by a `LoRALinear`:

    y = x W^T + b + (alpha / rank) * B(A(dropout(x)))      A [rank, in], B [out, rank]

Naming (deliberate): the base weight and bias stay *on the wrapped module itself*
(``...attn.to_q.weight``, ``...attn.to_q.bias``), so the bare model's state dict, the
state-dict adapters of every family and the safetensors / DCP loaders see the base model's
names unchanged; the adapters add ``...attn.to_q.lora_A.weight`` and ``...lora_B.weight``,
the names of diffusers' PEFT LoRA files (``transformer.<module>.lora_A.weight``) minus the
prefix. (PEFT itself moves the base into ``base_layer``; nothing here needs that.)

Initialisation (``LoRALinear.init_rules``, read by the model's init plan): A as
``nn.Linear``'s default (Kaiming-uniform, a = sqrt(5), as PEFT), B = 0, so a freshly
wrapped model computes exactly the base model. The module is family-agnostic: it only walks
``named_modules`` and never looks at what the model is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lct_train.core.fqn import clean_fqn
from lct_train.model.precision import is_island

ADAPTER_NAMES = ("lora_A", "lora_B")


def is_adapter(name: str) -> bool:
    """Whether a parameter / state-dict FQN belongs to an adapter."""
    parts = name.split(".")
    return any(p in ADAPTER_NAMES for p in parts)


def is_base(name: str) -> bool:
    return not is_adapter(name)


def _kaiming_a(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=gen)


def _zeros(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.zeros_(t)


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` (the frozen base: ``weight``, ``bias``) plus ``lora_A``, ``lora_B``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the same Parameter objects: names and storage are kept
        self.bias = base.bias
        factory = {"device": base.weight.device, "dtype": torch.float32}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank

    def init_rules(self) -> list[tuple[nn.Parameter, object]]:
        """``(parameter, initializer)`` of the adapters (the model's init plan applies them)."""
        return [(self.lora_A.weight, _kaiming_a), (self.lora_B.weight, _zeros)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        return base + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def match_targets(model: nn.Module, targets: Sequence[str]) -> tuple[list[str], list[int]]:
    """FQNs of the ``nn.Linear`` modules whose name full-matches a pattern, and the indices of
    the patterns that matched none (the caller reports them)."""
    compiled = [re.compile(p) for p in targets]
    used = [False] * len(compiled)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module, LoRALinear) \
                or is_adapter(name):
            continue
        fqn = clean_fqn(name)
        hits = [i for i, pattern in enumerate(compiled) if pattern.fullmatch(fqn)]
        for i in hits:
            used[i] = True
        if hits:
            names.append(name)
    return names, [i for i, u in enumerate(used) if not u]


def apply_lora(model: nn.Module, names: Iterable[str], rank: int, alpha: float,
               dropout: float) -> None:
    """Wraps the ``nn.Linear`` modules ``names`` (from `match_targets`) in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))


def freeze_base(model: nn.Module, dtype: torch.dtype) -> None:
    """Base parameters: no gradient, held in ``dtype`` except the model's fp32 islands
    (`lct_train.model.precision`), held in fp32; adapters stay trainable fp32."""
    for name, module in model.named_modules():
        for key, param in list(module._parameters.items()):
            fqn = f"{name}.{key}"
            if param is not None and is_base(fqn):
                held = torch.float32 if is_island(model, fqn) else dtype
                module._parameters[key] = nn.Parameter(param.detach().to(held),
                                                       requires_grad=False)


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


@torch.no_grad()
def merge_lora(model: nn.Module, scale: float = 1.0) -> None:
    """``W += scale * (alpha / rank) * B @ A`` in every `LoRALinear` of a bare (unsharded)
    model, in the base weight's dtype (computed in at least fp32); the adapters stay in place
    (call `unwrap_lora` to drop them)."""
    for m in lora_modules(model):
        dtype = torch.promote_types(m.weight.dtype, torch.float32)
        delta = (m.lora_B.weight.to(dtype) @ m.lora_A.weight.to(dtype)) * (m.scaling * scale)
        m.weight.copy_((m.weight.to(dtype) + delta).to(m.weight.dtype))


def unwrap_lora(model: nn.Module) -> None:
    """Replaces every `LoRALinear` by a plain ``nn.Linear`` holding its base parameters."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoRALinear):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                          device="meta")
        plain.weight, plain.bias = module.weight, module.bias
        setattr(parent, child, plain)
