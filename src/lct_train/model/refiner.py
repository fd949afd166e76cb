"""Token refiner (HunyuanVideo's ``context_embedder``), run per group: each group's text tokens
attend only to that group's text (`PackedMeta.text_attn`) and are gated by that group's
timestep + mean-text vector."""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.blocks import BlockContext
from lct_train.model.config import ModelConfig
from lct_train.model.embeddings import TimestepTextEmbedding
from lct_train.model.layers import FeedForward, heads


class RefinerAttention(nn.Module):
    """Plain multi-head self-attention with biases (diffusers ``Attention``, no QK-norm)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        q, k, v = (heads(proj(x), self.num_heads) for proj in (self.to_q, self.to_k, self.to_v))
        return self.to_out[0](ctx.text_attention(q, k, v).flatten(1))


class RefinerGate(nn.Module):
    """``linear(silu(temb))`` -> per-group (gate_msa, gate_mlp) (diffusers ``HunyuanVideoAdaNorm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.nonlinearity = nn.SiLU()

    def forward(self, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_msa, gate_mlp = self.linear(self.nonlinearity(temb)).chunk(2, dim=-1)
        return gate_msa, gate_mlp


class RefinerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RefinerAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), activation="silu")
        self.norm_out = RefinerGate(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """``ctx`` is the model's `BlockContext` (only ``meta`` and ``backend`` are read)."""
        group = ctx.meta.text_group
        gate_msa, gate_mlp = self.norm_out(temb)
        x = x + self.attn(self.norm1(x), ctx) * gate_msa[group]
        return x + self.ff(self.norm2(x)) * gate_mlp[group]


class RefinerStack(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.refiner_blocks = nn.ModuleList(
            RefinerBlock(cfg.hidden_size, cfg.num_heads, cfg.refiner_mlp_ratio, cfg.norm_eps)
            for _ in range(cfg.num_refiner_blocks)
        )


class TokenRefiner(nn.Module):
    """``text [Nt, text_dim] -> [Nt, D]``; with 0 refiner blocks only ``proj_in``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.time_text_embed = None
        self.token_refiner = None
        if cfg.num_refiner_blocks > 0:
            self.time_text_embed = TimestepTextEmbedding(dim, cfg.text_dim, cfg.time_freq_dim)
        self.proj_in = nn.Linear(cfg.text_dim, dim)
        if cfg.num_refiner_blocks > 0:
            self.token_refiner = RefinerStack(cfg)

    def forward(self, text: torch.Tensor, timestep: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """``timestep [G]`` (already scaled): each group's text is refined with its own timestep."""
        hidden = self.proj_in(text)
        if self.token_refiner is None:
            return hidden
        meta = ctx.meta
        sums = text.new_zeros(meta.num_groups, text.shape[1]).index_add_(0, meta.text_group, text)
        if meta.shard is not None:  # this rank holds part of the text: sum over the SP group
            sums = meta.shard.sum_groups(sums)
        counts = meta.group_text_count.clamp(min=1)  # built on the host: no device sync
        temb = self.time_text_embed(timestep, sums / counts[:, None].to(text.dtype))
        for block in self.token_refiner.refiner_blocks:
            hidden = block(hidden, temb, ctx)
        return hidden
