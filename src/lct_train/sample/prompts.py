"""Prompts -> ``PromptEmbedding`` with a data-package text encoder (``build_text_encoder``).

The uncond branch of classifier-free guidance gets the encoder's output for the negative
prompt (``negative``): the model preset's / scene file's / ``--negative-prompt``'s text, else
``""``, the same encoder call that produced the dataset's ``empty_prompt.safetensors`` for
prompt dropout. A model that takes no pooled vector (``config.takes_pooled`` false: Wan) gets
embeddings without one, and the encoder's pooled width is not checked against it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lct_train.sample.inputs import PromptEmbedding

EMPTY_PROMPT = ""


class PromptEncoder:
    """Encodes prompts with ``encoder`` (``.encode(list[str]) -> TextBatch``), memoised."""

    def __init__(self, encoder, config=None) -> None:
        """``config``: the model's (a family config); checks the encoder's widths against it."""
        self.takes_pooled = config is None or config.takes_pooled
        if config is not None:
            given = {"text_dim": encoder.text_dim}
            wanted = {"text_dim": config.text_dim}
            if self.takes_pooled:
                given["pooled_dim"], wanted["pooled_dim"] = encoder.pooled_dim, config.pooled_dim
            if given != wanted:
                raise ValueError(
                    "text encoder gives " + ", ".join(f"{k}={v}" for k, v in given.items())
                    + " but the model takes " + ", ".join(f"{k}={v}" for k, v in wanted.items()))
        self.encoder = encoder
        self._memo: dict[str, PromptEmbedding] = {}

    def __call__(self, prompts: Sequence[str]) -> list[PromptEmbedding]:
        todo = sorted({p for p in prompts if p not in self._memo})
        if todo:
            batch = self.encoder.encode(todo)
            for i, p in enumerate(todo):
                pooled = batch.pooled[i].float() if self.takes_pooled else None
                self._memo[p] = PromptEmbedding(batch.valid(i).float(), pooled)
        return [self._memo[p] for p in prompts]

    def one(self, prompt: str) -> PromptEmbedding:
        return self([prompt])[0]

    def negative(self, prompt: str | None = None) -> PromptEmbedding:
        """The uncond branch's embedding: of ``prompt``, the empty prompt when ``None``."""
        return self.one(EMPTY_PROMPT if prompt is None else prompt)

    @property
    def empty(self) -> PromptEmbedding:
        return self.negative()
