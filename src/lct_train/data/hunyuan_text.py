"""HunyuanVideo's text conditioning, exactly as diffusers' ``HunyuanVideoPipeline.encode_prompt``.

- tokens: the Llama encoder on the prompt inside the pipeline's prompt template
  (``DEFAULT_PROMPT_TEMPLATE``), the hidden state 3rd from last (``num_hidden_layers_to_skip=2``),
  the template's ``crop_start`` tokens cropped, at most ``max_length`` (256) prompt tokens;
- pooled: CLIP-L's ``pooler_output`` on the prompt padded to 77 tokens.

``crop_start`` is computed from the tokenizer as diffusers does for a template without one (the
template's tokens minus ``{}`` and ``<|eot_id|>``): HunyuanVideo's tokenizer gives 95, the
constant of diffusers' template, and a tiny test tokenizer gives its own count. A ``crop_start``
in the spec overrides it.

One deliberate difference in *how*, not *what*: the Llama batch is padded to its longest prompt,
not to ``crop_start + 256``. With right padding and causal attention the valid tokens do not see
the pads, so they equal diffusers' (fp32: within float rounding); only the wasted pad compute
goes. A prompt longer than an encoder takes is cut as diffusers cuts it (the Llama tokens after
the 256th, the template's closing ``<|eot_id|>`` included; CLIP's after the 77th) and logged in
one warning line saying what was cut.
"""

from __future__ import annotations

import logging

import torch

from lct_train.data.text_encoders import TextBatch

logger = logging.getLogger(__name__)

LLAMA_MAX_LENGTH = 256  # encode_prompt's max_sequence_length
CLIP_MAX_LENGTH = 77
HIDDEN_LAYERS_TO_SKIP = 2  # hidden_states[-(2 + 1)]: the 3rd from last
TEMPLATE_TAIL = 2  # "{}" and "<|eot_id|>": template tokens that are not cropped
PROMPT_SHOWN = 60  # characters of a cut prompt quoted in the warning


def default_template() -> dict:
    """diffusers' HunyuanVideo prompt template (``template`` with ``{}``, ``crop_start``)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return dict(DEFAULT_PROMPT_TEMPLATE)


def template_crop_start(tokenizer, template: str) -> int:
    """The template's tokens before the prompt, counted as diffusers counts them when the
    template gives no ``crop_start``: all of them minus the ``{}`` and ``<|eot_id|>`` tokens."""
    ids = tokenizer(template, return_attention_mask=False)["input_ids"]
    return len(ids) - TEMPLATE_TAIL


class HunyuanVideoTextEncoder:
    """Llama (tokens) + CLIP-L (pooled) of a HunyuanVideo pipeline; ``encode`` gives what
    ``encode_prompt`` gives. Build it with ``pipeline_dir.load_text_encoder``."""

    def __init__(self, text_encoder, tokenizer, text_encoder_2, tokenizer_2, *, spec: dict,
                 crop_start: int | None = None, max_length: int = LLAMA_MAX_LENGTH,
                 template: str | None = None):
        self.template = template or default_template()["template"]
        self.crop_start = template_crop_start(tokenizer, self.template) if crop_start is None else crop_start
        self.max_length = max_length
        self.llama, self.tokenizer = text_encoder.eval(), tokenizer
        self.clip, self.tokenizer_2 = text_encoder_2.eval(), tokenizer_2
        self.text_dim = int(text_encoder.config.hidden_size)
        self.pooled_dim = int(text_encoder_2.config.hidden_size)
        self._spec = dict(spec, crop_start=self.crop_start, max_length=max_length)
        if template is not None:
            self._spec["template"] = template

    def spec(self) -> dict:
        return dict(self._spec)

    @property
    def device(self) -> torch.device:
        return next(self.llama.parameters()).device

    def _warn_cut(self, prompts: list[str], llama_ids: list[list[int]]) -> None:
        for prompt, ids in zip(prompts, llama_ids):
            cuts = []
            n_llama = len(ids) - self.crop_start  # the prompt's tokens and the closing <|eot_id|>
            if n_llama > self.max_length:
                cuts.append(f"the first {self.max_length} of its {n_llama} Llama tokens "
                            "(<|eot_id|> included)")
            n_clip = len(self.tokenizer_2(prompt)["input_ids"])
            if n_clip > CLIP_MAX_LENGTH:
                cuts.append(f"the first {CLIP_MAX_LENGTH} of its {n_clip} CLIP tokens")
            if cuts:
                shown = prompt if len(prompt) <= PROMPT_SHOWN else prompt[:PROMPT_SHOWN] + "..."
                logger.warning("prompt %r is cut to %s, as diffusers' HunyuanVideo encode_prompt "
                               "cuts it", shown, " and ".join(cuts))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextBatch:
        prompts = list(prompts)
        texts = [self.template.format(p) for p in prompts]
        self._warn_cut(prompts, self.tokenizer(texts, return_attention_mask=False)["input_ids"])
        device = self.device
        enc = self.tokenizer(texts, max_length=self.crop_start + self.max_length, truncation=True,
                             padding="longest", return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        hidden = self.llama(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        tokens = hidden[-(HIDDEN_LAYERS_TO_SKIP + 1)][:, self.crop_start:]
        mask = mask[:, self.crop_start:].bool()
        clip_ids = self.tokenizer_2(prompts, padding="max_length", max_length=CLIP_MAX_LENGTH,
                                    truncation=True, return_tensors="pt")["input_ids"]
        pooled = self.clip(clip_ids.to(device), output_hidden_states=False).pooler_output
        return TextBatch(tokens.float().cpu(), mask.cpu(), pooled.float().cpu())
