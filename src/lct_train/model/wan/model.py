"""`WanModel`: diffusers' `WanTransformer3DModel` (text-to-video) over packed LCT scenes, a pure
nn.Module (SPEC §9).

``model(video, text, pooled, timesteps, meta, guidance=None, kv_cache=None) -> [Nv, patch_dim]``
with the MMDiT's signature: ``pooled`` and ``guidance`` must be None (Wan has neither). Per-batch
work (RoPE cos/sin, the attention plans, per-group timestep vectors, the embedded text rows)
happens once at the top of `forward`; blocks consume it. The parameter names and shapes are
diffusers' except ``patch_embedding.weight``, a Linear over patch vectors ``(c, pt, ph, pw)``
(the Conv3d kernel flattened). ``proj_out`` keeps diffusers' row order ``(pt, ph, pw, c)``; the
output is reordered to the project's ``(c, pt, ph, pw)`` patch vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.attention import get_backend
from lct_train.model.init import _embedder_normal
from lct_train.model.layers import TimestepEmbedding, timestep_sinusoid
from lct_train.model.rope import rope_cos_sin
from lct_train.model.wan.blocks import MODULATION_CHUNKS, FP32LayerNorm, WanBlock, WanBlockContext
from lct_train.model.wan.config import WanConfig
from lct_train.model.wan.kv_cache import WanKVCache
from lct_train.model.wan.layout import WanMeta

ROPE_FREQ_DTYPE = torch.float64  # diffusers builds Wan's RoPE table in float64, stores fp32


def _table_normal(t: torch.Tensor, gen: torch.Generator | None) -> object:
    return nn.init.normal_(t, std=t.shape[-1] ** -0.5, generator=gen)


class WanTextProjection(nn.Module):
    """``linear_2(gelu_tanh(linear_1(x)))`` (diffusers `PixArtAlphaTextProjection`, gelu_tanh)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class WanConditionEmbedder(nn.Module):
    """diffusers' `WanTimeTextImageEmbedding` without the image branch: per-group ``temb``
    ``[G, D]`` and ``time_proj`` ``[G, 6, D]``, and the embedded text rows."""

    def __init__(self, dim: int, time_freq_dim: int, text_dim: int):
        super().__init__()
        self.time_freq_dim = time_freq_dim
        self.time_embedder = TimestepEmbedding(time_freq_dim, dim)
        self.act_fn = nn.SiLU()
        self.time_proj = nn.Linear(dim, MODULATION_CHUNKS * dim)
        self.text_embedder = WanTextProjection(text_dim, dim)

    def forward(self, timestep: torch.Tensor, text: torch.Tensor):
        """``timestep [G]`` (already scaled), ``text [Nt, text_dim]``."""
        sinusoid = timestep_sinusoid(timestep, self.time_freq_dim)
        temb = self.time_embedder(sinusoid.to(self.time_embedder.linear_1.weight.dtype))
        temb = temb.type_as(text)
        time_proj = self.time_proj(self.act_fn(temb)).unflatten(1, (MODULATION_CHUNKS, -1))
        return temb, time_proj, self.text_embedder(text)


class WanModel(nn.Module):
    # LoRA targets of ``finetune.targets=[]`` (``lct_train.model.lora``): DiffSynth-Studio's Wan
    # default ``q,k,v,o,ffn.0,ffn.2`` in diffusers' names, the self- and cross-attention
    # projections and the FFN of every block (what ``WanPipeline.load_lora_weights`` reads).
    lora_targets = (
        r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)",
        r"blocks\.\d+\.ffn\.net\.(0\.proj|2)",
    )

    # fp32 islands (``lct_train.model.precision``): diffusers' ``WanTransformer3DModel.
    # _keep_in_fp32_modules`` (0.42); ``rope`` holds no parameter here.
    keep_in_fp32 = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden_size
        self.patch_embedding = nn.Linear(cfg.patch_dim, dim)
        self.condition_embedder = WanConditionEmbedder(dim, cfg.time_freq_dim, cfg.text_dim)
        self.blocks = nn.ModuleList(
            WanBlock(dim, cfg.num_heads, cfg.ffn_dim, cfg.norm_eps, cfg.cross_attn_norm, layer=i)
            for i in range(cfg.num_layers)
        )
        self.norm_out = FP32LayerNorm(dim, cfg.norm_eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, cfg.patch_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def init_rules(self):
        """Scratch initialisation beyond `lct_train.model.init`'s generic rules (Linear:
        Xavier, embedders: N(0, 0.02), `proj_out`: 0), as Wan's own `init_weights`: the text
        embedder like the timestep embedder, every modulation table N(0, 1/D) (its constructor's
        draw)."""
        tables = [self.scale_shift_table, *(b.scale_shift_table for b in self.blocks)]
        text = self.condition_embedder.text_embedder
        return [*((t, _table_normal) for t in tables),
                *((lin.weight, _embedder_normal) for lin in (text.linear_1, text.linear_2))]

    def block_lists(self) -> tuple[nn.ModuleList, ...]:
        """The repeated blocks: the units ``parallelize`` wraps (AC, compile, FSDP)."""
        return (self.blocks,)

    @property
    def num_attention_layers(self) -> int:
        return self.cfg.num_layers

    def new_kv_cache(self) -> WanKVCache:
        return WanKVCache(self.num_attention_layers)

    def forward(
        self,
        video: torch.Tensor,
        text: torch.Tensor,
        pooled: torch.Tensor | None,
        timesteps: torch.Tensor,
        meta: WanMeta,
        guidance: torch.Tensor | float | None = None,
        kv_cache: WanKVCache | None = None,
    ) -> torch.Tensor:
        """Velocity ``[Nv, patch_dim]``.

        ``video [Nv, patch_dim]`` noisy patches of the shots, ``text [Nt, text_dim]`` the valid
        tokens of every group (global prompt first), ``timesteps [G]`` in [0, 1] (the global
        group's is unused: it has no video), ``pooled`` / ``guidance`` None.
        """
        cfg = self.cfg
        self._check_inputs(video, text, pooled, timesteps, meta, guidance, kv_cache)
        backend = get_backend(cfg.attn_backend, video.device, meta.mask != "bidirectional")
        meta.attn.plan_for(backend)  # the kernel plans, once per batch
        meta.cross_attn.plan_for(backend)
        rotate = torch.ones(meta.num_video, dtype=torch.bool, device=video.device)
        cos, sin = rope_cos_sin(meta.rope_coords, rotate, cfg.rope_axes_dim, cfg.rope_theta,
                                torch.promote_types(video.dtype, torch.float32), ROPE_FREQ_DTYPE)
        if kv_cache is not None:
            kv_cache.begin(meta.specs[0])
        ctx = WanBlockContext(meta, cos, sin, backend, kv_cache)

        # text rows + one zero row: the padding of every window (Wan pads prompts with zeros)
        text = torch.cat([text, text.new_zeros(1, text.shape[1])])
        temb, time_proj, text = self.condition_embedder(timesteps * cfg.timestep_scale, text)
        x = self.patch_embedding(video)
        for block in self.blocks:
            x = block(x, time_proj, text, ctx)

        shift, scale = (self.scale_shift_table + temb[:, None]).unbind(1)  # [G, D] each
        group = meta.video_group
        x = (self.norm_out(x.float()) * (1 + scale[group]) + shift[group]).type_as(x)
        out = self.proj_out(x)  # rows (pt, ph, pw, c) -> patch vectors (c, pt, ph, pw)
        return out.unflatten(1, (-1, cfg.latent_channels)).transpose(1, 2).flatten(1)

    def _check_inputs(self, video, text, pooled, timesteps, meta, guidance, kv_cache) -> None:
        cfg = self.cfg
        if not isinstance(meta, WanMeta):
            raise ValueError(f"WanModel: meta must be a WanMeta (build_wan_meta), got "
                             f"{type(meta).__name__}")
        expected = {
            "video": (video, (meta.num_video, cfg.patch_dim)),
            "text": (text, (meta.num_text, cfg.text_dim)),
            "timesteps": (timesteps, (meta.num_groups,)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"WanModel: {name} must have shape {shape} (from meta/config), "
                                 f"got {tuple(tensor.shape)}")
        if pooled is not None or guidance is not None:
            raise ValueError("WanModel: Wan takes no pooled text and no guidance embedding; "
                             "pass pooled=None, guidance=None")
        if meta.text_len != cfg.text_len:
            raise ValueError(f"WanModel: meta was built with text_len={meta.text_len}, the "
                             f"model has {cfg.text_len}")
        built, ours = (meta.rope_offsets, meta.shot_gap), (cfg.rope_offsets, cfg.shot_gap)
        if built != ours:
            raise ValueError(f"WanModel: meta was built with (rope_offsets, shot_gap)={built}, "
                             f"the model has {ours}")
        if meta.shard is not None and cfg.num_heads % meta.shard.sp.size:
            raise ValueError(f"WanModel: sequence parallelism of {meta.shard.sp.size} ranks "
                             f"needs num_heads={cfg.num_heads} divisible by it")
        if kv_cache is not None:
            if meta.mask != "causal":
                raise ValueError("WanModel: a KV cache needs a context-causal batch")
            cached = (len(kv_cache.spec.groups), kv_cache.num_tokens, kv_cache.num_text)
            if (meta.cached_groups, meta.cached_video, meta.cached_text) != cached:
                raise ValueError(
                    f"WanModel: meta expects {meta.cached_groups} cached groups / "
                    f"{meta.cached_video} video / {meta.cached_text} text tokens, the KV cache "
                    f"holds {cached}; build meta with cached=cache.spec")
        elif meta.cached_groups:
            raise ValueError("WanModel: meta was built with cached=..., pass kv_cache")
