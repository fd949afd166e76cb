"""Exponential moving average of the weights, kept in fp32 and sharded like the parameters.

``ema = decay * ema + (1 - decay) * param`` every ``every`` optimizer steps, on the local
shards only (no communication). ``state_dict()`` maps the bare model's parameter FQNs to the
EMA tensors (DTensors under FSDP2), so DCP saves and reshards it like the model (design §6).
"""

from __future__ import annotations

import torch
from torch import nn

from lct_train.core.fqn import clean_fqn


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


class EMA:
    """EMA of ``model``'s trainable parameters; a DCP ``Stateful``."""

    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        self.decay = decay
        self.every = every
        self.params: dict[str, torch.Tensor] = {}
        self.shadow: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                fqn = clean_fqn(name)
                self.params[fqn] = param
                self.shadow[fqn] = param.detach().to(torch.float32, copy=True)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Call after the optimizer step that made ``step`` (1-based)."""
        if step % self.every:
            return
        shadow = [_local(t) for t in self.shadow.values()]
        params = [_local(p).to(torch.float32) for p in self.params.values()]
        torch._foreach_lerp_(shadow, params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for fqn, value in state.items():
                if value is not self.shadow[fqn]:
                    self.shadow[fqn].copy_(value)
