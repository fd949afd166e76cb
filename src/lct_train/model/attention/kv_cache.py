"""`KVCache`: per-attention-layer K/V of one scene's cached groups, for context-causal inference.

K/V are stored after QK-norm and RoPE, in joint order, in growable per-layer buffers. A forward
with a cache writes the new groups' K/V into the slot after the cached ones and attends to
``buffer[:cached + new]`` (no copy of the prefix); `commit` makes the slot part of the cache
when that forward ran with ``write=True`` (the history at its conditioning timestep, SPEC §7).
Inference only.
"""

from __future__ import annotations

import torch

from lct_train.model.layout import SceneSpec

GROWTH = 2  # buffer capacity multiplier when it must grow


class KVCache:
    def __init__(self, num_layers: int):
        self.spec = SceneSpec(())  # the cached groups
        self.write = False
        self._keys: list[torch.Tensor | None] = [None] * num_layers
        self._values: list[torch.Tensor | None] = [None] * num_layers
        self._pending: SceneSpec | None = None  # new groups of the last forward with write=True

    @property
    def num_tokens(self) -> int:
        return self.spec.num_tokens

    def begin(self, new_groups: SceneSpec) -> None:
        """Called by the model before a forward over ``new_groups``."""
        self._pending = new_groups if self.write else None

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the new ``k, v [Ln, H, D]`` after the cache; returns ``cache + new`` K and V."""
        if k.requires_grad or v.requires_grad:
            raise RuntimeError("KVCache is for inference: run the model under torch.no_grad()")
        return _append(self._keys, self._values, layer, self.num_tokens, k, v)

    def commit(self) -> None:
        """Appends the groups of the last forward run with ``write=True`` to the cache."""
        if self._pending is None:
            raise RuntimeError(
                "KVCache.commit: no forward with kv_cache.write=True since the last commit"
            )
        self.spec = self.spec.extended(self._pending.groups)
        self._pending = None


def _append(keys: list, values: list, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
    """Writes ``k, v`` at ``start`` of the layer's buffers (grown as needed); returns the
    buffers' first ``start + len(k)`` rows."""
    end = start + k.shape[0]
    keys[layer] = _ensure(keys[layer], end, k, start)
    values[layer] = _ensure(values[layer], end, v, start)
    keys[layer][start:end] = k
    values[layer][start:end] = v
    return keys[layer][:end], values[layer][:end]


def _ensure(buffer: torch.Tensor | None, size: int, like: torch.Tensor, keep: int) -> torch.Tensor:
    """A buffer with room for ``size`` rows whose first ``keep`` rows are the old ones."""
    if buffer is not None and buffer.shape[0] >= size:
        return buffer
    grown = like.new_empty(
        (max(size, GROWTH * (0 if buffer is None else buffer.shape[0])), *like.shape[1:])
    )
    if buffer is not None:
        grown[:keep] = buffer[:keep]
    return grown
