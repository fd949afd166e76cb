"""Wan's text conditioning, exactly as diffusers' ``WanPipeline._get_t5_prompt_embeds``.

Each prompt is cleaned with diffusers' own ``prompt_clean`` (``ftfy.fix_text`` when ftfy is
installed, as in diffusers, then HTML unescaping twice and whitespace collapsed), tokenized to
``max_length`` (512) tokens with padding to that length, truncation and the special tokens
(umT5's closing ``</s>``), and run through the umT5 encoder with the attention mask; the rows of
``last_hidden_state`` past the prompt's valid length are dropped. The shards keep those valid
rows only: the Wan model re-creates the zero padding to 512 (``WanConfig.text_len``). There is
no pooled vector: ``pooled_dim`` is 0 and ``TextBatch.pooled`` is ``[B, 0]``.

ftfy is not a dependency of this project (nor of diffusers): without it both skip the same
step, so the tokens stay equal to diffusers' on the same machine. ``spec()`` records whether
ftfy ran (``ftfy``), as it changes mis-encoded text (mojibake) and so the tokens.

A prompt longer than ``max_length`` tokens is cut as diffusers cuts it (its closing ``</s>``
lost) and logged in one warning line.
"""

from __future__ import annotations

import logging

import torch

from lct_train.data.text_encoders import TextBatch

logger = logging.getLogger(__name__)

UMT5_MAX_LENGTH = 512  # WanPipeline's max_sequence_length
PROMPT_SHOWN = 60  # characters of a cut prompt quoted in the warning


def prompt_clean(text: str) -> str:
    """diffusers' Wan ``prompt_clean`` (the one rule, imported, not copied)."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean as diffusers_prompt_clean

    return diffusers_prompt_clean(text)


def ftfy_available() -> bool:
    from diffusers.utils import is_ftfy_available

    return bool(is_ftfy_available())


class UMT5TextEncoder:
    """umT5 (tokens only) of a Wan pipeline; ``encode`` gives ``_get_t5_prompt_embeds``' rows
    before their zero padding. Build it with ``pipeline_dir.load_text_encoder``."""

    pooled_dim = 0  # Wan has no pooled text vector

    def __init__(self, text_encoder, tokenizer, *, spec: dict, max_length: int = UMT5_MAX_LENGTH,
                 ftfy: bool | None = None):
        self.model, self.tokenizer, self.max_length = text_encoder.eval(), tokenizer, max_length
        self.text_dim = int(text_encoder.config.d_model)
        self._spec = dict(spec, max_length=max_length, ftfy=ftfy_available())
        if ftfy is not None and ftfy != self._spec["ftfy"]:  # rebuilt from a dataset's spec
            logger.warning("the umT5 prompts of this spec were cleaned %s ftfy, here they are cleaned "
                           "%s it (pip install ftfy to match diffusers with it)",
                           "with" if ftfy else "without", "with" if self._spec["ftfy"] else "without")

    def spec(self) -> dict:
        return dict(self._spec)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _warn_cut(self, prompts: list[str], cleaned: list[str]) -> None:
        for prompt, ids in zip(prompts, self.tokenizer(cleaned, return_attention_mask=False)["input_ids"]):
            if len(ids) > self.max_length:
                shown = prompt if len(prompt) <= PROMPT_SHOWN else prompt[:PROMPT_SHOWN] + "..."
                logger.warning("prompt %r is cut to the first %d of its %d umT5 tokens (</s> included), "
                               "as diffusers' WanPipeline cuts it", shown, self.max_length, len(ids))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextBatch:
        prompts = list(prompts)
        cleaned = [prompt_clean(p) for p in prompts]
        self._warn_cut(prompts, cleaned)
        enc = self.tokenizer(cleaned, padding="max_length", max_length=self.max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = self.device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        tokens = self.model(ids, mask).last_hidden_state
        return TextBatch(tokens.float().cpu(), mask.gt(0).cpu(), torch.zeros(len(prompts), 0))
