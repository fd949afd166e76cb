"""The Wan transformer block (diffusers' `WanTransformerBlock`, same parameter names) over packed
scenes: modulated video self-attention (3D RoPE, SPEC §4 masks), unmodulated cross-attention
from each shot's video to its prompt window (SPEC §9), modulated FFN. Per-group modulation
vectors are gathered to the video tokens of their group; fp32 where diffusers keeps fp32."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from lct_train.model.attention import attend
from lct_train.model.blocks import BlockContext
from lct_train.model.layers import FeedForward, heads

MODULATION_CHUNKS = 6  # shift / scale / gate for self-attention, then for the FFN


class WanBlockContext(BlockContext):
    """`BlockContext` (RoPE, self-attention over `meta.attn`, KV cache, sequence parallelism)
    plus the windowed cross-attention of a `WanMeta`."""

    __slots__ = ()

    def cross_attention(
        self, layer: int | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """``q [Nv, H, Dh]`` video; ``k, v [Nt + 1, H, Dh]``: this batch's text rows, then the
        zero row. Each shot attends to its window (``meta.window_index``), no key mask."""
        if self.kv_cache is not None:
            k_text, v_text = self.kv_cache.update_text(layer, k[:-1], v[:-1])
            k, v = torch.cat([k_text, k[-1:]]), torch.cat([v_text, v[-1:]])
        index, shard = self.meta.window_index, self.meta.shard

        def windows(q, k, v):
            return attend(self.backend, q, k[index], v[index], self.meta.cross_attn)

        # Under sequence parallelism (``meta.shard``) the queries are this rank's video rows,
        # the text rows are replicated: one all-to-all of q to heads, and back.
        return windows(q, k, v) if shard is None else shard.attend_queries(windows, q, k, v)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (diffusers' `FP32LayerNorm`), returned in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class WanAttention(nn.Module):
    """q / k / v / out projections with RMSNorm of q and k over the full width (across heads).
    Called through ``forward`` (the attention itself is the caller's ``attend``), so that an
    FSDP unit of its own gathers its parameters (``parallelize``: fp32 islands)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.norm_q, self.norm_k = (nn.RMSNorm(dim, eps=eps) for _ in range(2))

    def project(self, x: torch.Tensor, source: torch.Tensor):
        """``q`` from ``x``, ``k, v`` from ``source``, as ``[N, H, Dh]``."""
        h = self.num_heads
        q = heads(self.norm_q(self.to_q(x)), h)
        return q, heads(self.norm_k(self.to_k(source)), h), heads(self.to_v(source), h)

    def forward(self, x: torch.Tensor, source: torch.Tensor, attend: Callable) -> torch.Tensor:
        """``to_out(attend(q, k, v))`` with ``q`` from ``x`` and ``k, v`` from ``source``."""
        return self.to_out[0](attend(*self.project(x, source)).flatten(1))


class WanBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float, cross_attn_norm: bool,
                 layer: int):
        super().__init__()
        self.layer = layer  # index into the KV cache
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim, num_heads, eps)
        self.attn2 = WanAttention(dim, num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else None
        self.ffn = FeedForward(dim, ffn_dim, "gelu-tanh")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.randn(1, MODULATION_CHUNKS, dim) / dim**0.5)

    def forward(
        self, x: torch.Tensor, time_proj: torch.Tensor, text: torch.Tensor, ctx: WanBlockContext
    ) -> torch.Tensor:
        """``x [Nv, D]`` video; ``time_proj [G, 6, D]`` per group; ``text [Nt + 1, D]`` the
        embedded text rows and the zero row."""
        group = ctx.meta.video_group
        mod = (self.scale_shift_table + time_proj.float()).unbind(1)  # 6 x [G, D], fp32
        shift, scale, gate, c_shift, c_scale, c_gate = (m[group] for m in mod)

        norm = (self.norm1(x.float()) * (1 + scale) + shift).type_as(x)
        out = self.attn1(norm, norm, partial(ctx.attention, ctx.cache_slot(self)))
        x = (x.float() + out * gate).type_as(x)

        norm = x if self.norm2 is None else self.norm2(x.float()).type_as(x)
        x = x + self.attn2(norm, text, partial(ctx.cross_attention, ctx.cache_slot(self)))

        norm = (self.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
        return (x.float() + self.ffn(norm).float() * c_gate).type_as(x)
