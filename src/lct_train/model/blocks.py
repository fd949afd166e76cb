"""Transformer blocks: MMDiT dual-stream (`DualStreamBlock`) and single-stream (`SingleStreamBlock`),
with diffusers HunyuanVideo parameter names. Attention runs over the joint sequence of the packed
scenes; everything per-batch comes from `BlockContext`, built once per forward."""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.attention import KVCache, attend
from lct_train.model.layers import AdaLayerNormZero, FeedForward, heads, modulate
from lct_train.model.layout import PackedMeta
from lct_train.model.rope import apply_rope

DUAL_CHUNKS = 6  # shift/scale/gate for attention and MLP
SINGLE_CHUNKS = 3  # shift/scale/gate


class BlockContext:
    """What every block reads: batch metadata, RoPE cos/sin [L, Dh], the backend, the KV cache.

    Under sequence parallelism ``meta`` is the rank-local view (``meta.shard`` set) and the
    attention methods exchange q/k/v and the output with the SP group around the backend.

    A plain class on purpose, not a dataclass: FSDP2's ``cast_forward_inputs`` walks block
    inputs with ``torch.distributed.utils._apply_to_tensors``, which rebuilds every dataclass
    it meets (``dataclasses.replace``) and casts its float tensors. Through a dataclass the
    RoPE tables would be cast to bf16 per block and the `PackedMeta` / `AttnIntervals` copied
    (losing the memoised attention plans); an object without ``__dataclass_fields__`` is
    passed through untouched.
    """

    __slots__ = ("backend", "kv_cache", "meta", "rope_cos", "rope_sin")

    def __init__(
        self,
        meta: PackedMeta,
        rope_cos: torch.Tensor,
        rope_sin: torch.Tensor,
        backend: object,
        kv_cache: KVCache | None = None,
    ):
        self.meta = meta
        self.rope_cos = rope_cos
        self.rope_sin = rope_sin
        self.backend = backend
        self.kv_cache = kv_cache

    def cache_slot(self, block: nn.Module) -> int | None:
        """``block``'s layer index in the KV cache; None without a cache. The index is read only
        with a cache: under torch.compile a Python int read is a guard, and every block (one
        code object) would get its own graph, hitting dynamo's recompile limit."""
        return None if self.kv_cache is None else block.layer

    def attention(
        self, layer: int | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Joint-order ``q, k, v [L, H, Dh]`` (after QK-norm): RoPE, cache, masked attention."""
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        k = apply_rope(k, self.rope_cos, self.rope_sin)

        def full_sequence(q, k, v):
            if self.kv_cache is not None:
                k, v = self.kv_cache.update(layer, k, v)
            return attend(self.backend, q, k, v, self.meta.attn)

        return self._sharded(full_sequence, q, k, v, text=False)

    def text_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Text-stream ``q, k, v [Nt, H, Dh]``, each group's text attends to itself (refiner)."""
        return self._sharded(
            lambda q, k, v: attend(self.backend, q, k, v, self.meta.text_attn), q, k, v, text=True
        )

    def _sharded(self, fn, q, k, v, text: bool) -> torch.Tensor:
        """``fn`` on the full sequence; under sequence parallelism (``meta.shard``) through the
        shard's all-to-all pair, on this rank's heads (``lct_train.parallel.ulysses``)."""
        shard = self.meta.shard
        return fn(q, k, v) if shard is None else shard.attend(fn, q, k, v, text=text)


class JointAttention(nn.Module):
    """Separate QKV / QK-RMSNorm / output weights per stream (``to_*`` video, ``add_*`` text)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q, self.norm_k = (nn.RMSNorm(head_dim, eps=eps) for _ in range(2))
        self.norm_added_q, self.norm_added_k = (nn.RMSNorm(head_dim, eps=eps) for _ in range(2))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_add_out = nn.Linear(dim, dim)

    def forward(
        self, layer: int | None, video: torch.Tensor, text: torch.Tensor, ctx: BlockContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        meta, h = ctx.meta, self.num_heads
        q = torch.cat(
            [
                self.norm_added_q(heads(self.add_q_proj(text), h)),
                self.norm_q(heads(self.to_q(video), h)),
            ]
        )
        k = torch.cat(
            [
                self.norm_added_k(heads(self.add_k_proj(text), h)),
                self.norm_k(heads(self.to_k(video), h)),
            ]
        )
        v = torch.cat([heads(self.add_v_proj(text), h), heads(self.to_v(video), h)])
        order = meta.joint_from_streams
        out = ctx.attention(layer, q[order], k[order], v[order]).flatten(1)
        return self.to_out[0](out[meta.video_to_joint]), self.to_add_out(out[meta.text_to_joint])


class DualStreamBlock(nn.Module):
    """MMDiT block (``HunyuanVideoTransformerBlock``): per-stream weights, joint attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, eps: float, layer: int):
        super().__init__()
        self.layer = layer  # index into the KV cache
        self.norm1 = AdaLayerNormZero(dim, DUAL_CHUNKS, eps)
        self.norm1_context = AdaLayerNormZero(dim, DUAL_CHUNKS, eps)
        self.attn = JointAttention(dim, num_heads, eps)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.ff = FeedForward(dim, mlp_dim)
        self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.ff_context = FeedForward(dim, mlp_dim)

    def forward(
        self, video: torch.Tensor, text: torch.Tensor, temb: torch.Tensor, ctx: BlockContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``video [Nv, D]``, ``text [Nt, D]``, ``temb [G, D]`` (one conditioning vector per group)."""
        vg, tg = ctx.meta.video_group, ctx.meta.text_group
        norm_v, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(video, temb, vg)
        norm_t, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(
            text, temb, tg
        )
        attn_v, attn_t = self.attn(ctx.cache_slot(self), norm_v, norm_t, ctx)
        video = video + attn_v * gate_msa[vg]
        text = text + attn_t * c_gate_msa[tg]
        norm_v = modulate(self.norm2(video), shift_mlp, scale_mlp, vg)
        norm_t = modulate(self.norm2_context(text), c_shift_mlp, c_scale_mlp, tg)
        video = video + self.ff(norm_v) * gate_mlp[vg]
        text = text + self.ff_context(norm_t) * c_gate_mlp[tg]
        return video, text


class SingleAttention(nn.Module):
    """Shared QKV + QK-RMSNorm for the single-stream block (no output projection: ``pre_only``)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q, self.norm_k = (nn.RMSNorm(dim // num_heads, eps=eps) for _ in range(2))

    def forward(self, layer: int | None, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        h = self.num_heads
        q, k = self.norm_q(heads(self.to_q(x), h)), self.norm_k(heads(self.to_k(x), h))
        return ctx.attention(layer, q, k, heads(self.to_v(x), h)).flatten(1)


class SingleStreamBlock(nn.Module):
    """``HunyuanVideoSingleTransformerBlock`` on the joint sequence: ``proj_out(cat(attn, mlp))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, eps: float, layer: int):
        super().__init__()
        self.layer = layer
        self.attn = SingleAttention(dim, num_heads, eps)
        self.norm = AdaLayerNormZero(dim, SINGLE_CHUNKS, eps)
        self.proj_mlp = nn.Linear(dim, mlp_dim)
        self.act_mlp = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(dim + mlp_dim, dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """``x [L, D]`` in joint order; ``temb [G, D]``."""
        group = ctx.meta.joint_group
        norm_x, gate = self.norm(x, temb, group)
        mlp = self.act_mlp(self.proj_mlp(norm_x))
        attn = self.attn(ctx.cache_slot(self), norm_x, ctx)
        return x + self.proj_out(torch.cat([attn, mlp], dim=-1)) * gate[group]
