"""Prompts -> ``PromptEmbedding`` with a data-package text encoder (``build_text_encoder``).

The empty-prompt embedding of the uncond branch is the encoder's output for ``""``: the same
encoder call that produced the dataset's ``empty_prompt.safetensors`` for prompt dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

from lct_train.model.config import ModelConfig
from lct_train.sample.inputs import PromptEmbedding

EMPTY_PROMPT = ""


class PromptEncoder:
    """Encodes prompts with ``encoder`` (``.encode(list[str]) -> TextBatch``), memoised."""

    def __init__(self, encoder, config: ModelConfig | None = None) -> None:
        if config is not None and (encoder.text_dim, encoder.pooled_dim) != (
            config.text_dim, config.pooled_dim
        ):
            raise ValueError(
                f"text encoder gives text_dim={encoder.text_dim}, pooled_dim={encoder.pooled_dim} "
                f"but the model takes text_dim={config.text_dim}, pooled_dim={config.pooled_dim}")
        self.encoder = encoder
        self._memo: dict[str, PromptEmbedding] = {}

    def __call__(self, prompts: Sequence[str]) -> list[PromptEmbedding]:
        todo = sorted({p for p in prompts if p not in self._memo})
        if todo:
            batch = self.encoder.encode(todo)
            for i, p in enumerate(todo):
                self._memo[p] = PromptEmbedding(batch.valid(i).float(), batch.pooled[i].float())
        return [self._memo[p] for p in prompts]

    def one(self, prompt: str) -> PromptEmbedding:
        return self([prompt])[0]

    @property
    def empty(self) -> PromptEmbedding:
        return self.one(EMPTY_PROMPT)
