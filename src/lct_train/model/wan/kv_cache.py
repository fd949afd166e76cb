"""`WanKVCache`: the KV cache of a Wan scene, self- and cross-attention (SPEC §7, §9).

Self-attention K/V are the cached groups' *video* tokens (the base `KVCache`, counted in video
tokens). Cross-attention K/V are kept per layer for the cached groups' *text* rows (after
`to_k` / `norm_k` and `to_v`): a new shot's window is the cached global prompt's rows, its own
rows and the zero row, so history prompts are projected once. Text depends on no timestep and
no guidance branch of another prompt: keep one cache per guidance branch (its own prompts).
"""

from __future__ import annotations

import torch

from lct_train.model.attention.kv_cache import KVCache, _append


class WanKVCache(KVCache):
    def __init__(self, num_layers: int):
        super().__init__(num_layers)
        self._text_keys: list[torch.Tensor | None] = [None] * num_layers
        self._text_values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def num_tokens(self) -> int:
        """Cached video tokens (the self-attention keys)."""
        return sum(g.video_len for g in self.spec.groups)

    @property
    def num_text(self) -> int:
        """Cached text rows (the cross-attention keys)."""
        return sum(g.text_len for g in self.spec.groups)

    def update_text(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the new text rows' ``k, v [Nt, H, D]``; returns ``cached + new`` K and V."""
        if k.requires_grad or v.requires_grad:
            raise RuntimeError("KVCache is for inference: run the model under torch.no_grad()")
        return _append(self._text_keys, self._text_values, layer, self.num_text, k, v)
