"""`LCTModel`: the long-context MMDiT over packed scenes (a pure nn.Module, SPEC §2-§5).

``model(video, text, pooled, timesteps, meta, guidance=None, kv_cache=None) -> [Nv, patch_dim]``.
Per-batch work (RoPE cos/sin, attention backend and its plan, conditioning vectors) happens once
at the top of `forward`; blocks consume it. Activation checkpointing, compile and sharding are
applied from outside to the block lists the model declares (``LCTModel.block_lists``).
"""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.attention import KVCache, get_backend
from lct_train.model.blocks import BlockContext, DualStreamBlock, SingleStreamBlock
from lct_train.model.config import ModelConfig
from lct_train.model.embeddings import ConditionEmbedding, PatchEmbed
from lct_train.model.layers import AdaLayerNormContinuous
from lct_train.model.layout import PackedMeta
from lct_train.model.refiner import TokenRefiner
from lct_train.model.rope import rope_cos_sin


class LCTModel(nn.Module):
    # LoRA targets of ``finetune.targets=[]`` (``lct_train.model.lora``): the attention
    # projections and MLPs of every dual- and single-stream block, in diffusers' names.
    lora_targets = (
        r"transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj"
        r"|add_v_proj|to_add_out)",
        r"transformer_blocks\.\d+\.(ff|ff_context)\.net\.(0\.proj|2)",
        r"single_transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v)",
        r"single_transformer_blocks\.\d+\.(proj_mlp|proj_out)",
    )

    # fp32 islands (``lct_train.model.precision``): none, as diffusers'
    # ``HunyuanVideoTransformer3DModel._keep_in_fp32_modules`` (None in 0.42).
    keep_in_fp32: tuple[str, ...] = ()

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        dim, heads, eps = cfg.hidden_size, cfg.num_heads, cfg.norm_eps
        self.x_embedder = PatchEmbed(cfg.patch_dim, dim)
        self.context_embedder = TokenRefiner(cfg)
        self.time_text_embed = ConditionEmbedding(
            dim, cfg.pooled_dim, cfg.time_freq_dim, cfg.guidance_embeds
        )
        self.transformer_blocks = nn.ModuleList(
            DualStreamBlock(dim, heads, cfg.mlp_dim, eps, layer=i)
            for i in range(cfg.num_dual_blocks)
        )
        self.single_transformer_blocks = nn.ModuleList(
            SingleStreamBlock(dim, heads, cfg.mlp_dim, eps, layer=cfg.num_dual_blocks + i)
            for i in range(cfg.num_single_blocks)
        )
        self.norm_out = AdaLayerNormContinuous(dim, eps)
        self.proj_out = nn.Linear(dim, cfg.patch_dim)

    def block_lists(self) -> tuple[nn.ModuleList, ...]:
        """The repeated blocks, in forward order: the units ``parallelize`` wraps (activation
        checkpointing, compile, one FSDP unit per block), listed as torchtitan's Flux does."""
        refiner = self.context_embedder.token_refiner
        lists = (self.transformer_blocks, self.single_transformer_blocks)
        return lists if refiner is None else (refiner.refiner_blocks, *lists)

    @property
    def num_attention_layers(self) -> int:
        return self.cfg.num_dual_blocks + self.cfg.num_single_blocks

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.num_attention_layers)

    def forward(
        self,
        video: torch.Tensor,
        text: torch.Tensor,
        pooled: torch.Tensor,
        timesteps: torch.Tensor,
        meta: PackedMeta,
        guidance: torch.Tensor | float | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Velocity ``[Nv, patch_dim]`` (dummy rows included, never use them).

        ``video [Nv, patch_dim]`` noisy patches (dummy rows are zeroed here), ``text [Nt, text_dim]``,
        ``pooled [G, pooled_dim]``, ``timesteps [G]`` in [0, 1], ``guidance`` [G] or a scalar
        (the distilled guidance scale; embedded like the timestep, times ``timestep_scale``).
        """
        cfg = self.cfg
        self._check_inputs(video, text, pooled, timesteps, meta, guidance, kv_cache)
        scaled_t = timesteps * cfg.timestep_scale
        if guidance is not None:
            guidance = (
                torch.as_tensor(guidance, device=video.device).expand(meta.num_groups)
                * cfg.timestep_scale
            )
        backend = get_backend(cfg.attn_backend, video.device, meta.mask != "bidirectional")
        # The kernel plans, once per batch (memoised on the intervals; every layer reuses them).
        meta.attn.plan_for(backend)
        if self.context_embedder.token_refiner is not None:
            meta.text_attn.plan_for(backend)
        rope_dtype = torch.promote_types(video.dtype, torch.float32)
        cos, sin = rope_cos_sin(
            meta.rope_coords, meta.rope_rotate, cfg.rope_axes_dim, cfg.rope_theta, rope_dtype
        )
        if kv_cache is not None:
            kv_cache.begin(meta.specs[0])
        ctx = BlockContext(meta, cos, sin, backend, kv_cache)

        temb = self.time_text_embed(scaled_t, pooled, guidance)
        text = self.context_embedder(text, scaled_t, ctx)
        video = self.x_embedder(video.masked_fill((meta.video_shot < 0)[:, None], 0.0))
        for block in self.transformer_blocks:
            video, text = block(video, text, temb, ctx)
        if len(self.single_transformer_blocks) > 0:
            joint = torch.cat([text, video])[meta.joint_from_streams]
            for block in self.single_transformer_blocks:
                joint = block(joint, temb, ctx)
            video = joint[meta.video_to_joint]
        return self.proj_out(self.norm_out(video, temb, meta.video_group))

    def _check_inputs(self, video, text, pooled, timesteps, meta, guidance, kv_cache) -> None:
        cfg, num_groups = self.cfg, meta.num_groups
        expected = {
            "video": (video, (meta.num_video, cfg.patch_dim)),
            "text": (text, (meta.num_text, cfg.text_dim)),
            "pooled": (pooled, (num_groups, cfg.pooled_dim)),
            "timesteps": (timesteps, (num_groups,)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"LCTModel: {name} must have shape {shape} (from meta/config), got {tuple(tensor.shape)}"
                )
        if meta.text_rope != cfg.text_rope:
            raise ValueError(
                f"LCTModel: meta was built with text_rope={meta.text_rope}, the model has {cfg.text_rope}"
            )
        for g, (is_global, count) in enumerate(
            zip((g.is_global for spec in meta.specs for g in spec.groups), meta.group_video_len)
        ):
            if is_global and count != cfg.num_dummy_tokens:
                raise ValueError(
                    f"LCTModel: global group {g} has {count} dummy tokens, config dummy_grid={cfg.dummy_grid}"
                )
        if cfg.guidance_embeds and guidance is None:
            raise ValueError(
                "LCTModel: this model embeds guidance (guidance_embeds=True); pass guidance"
            )
        if not cfg.guidance_embeds and guidance is not None:
            raise ValueError("LCTModel: guidance given but the model has guidance_embeds=False")
        if kv_cache is not None:
            if meta.mask != "causal":
                raise ValueError(
                    "LCTModel: a KV cache needs a context-causal batch (meta.mask='causal')"
                )
            if (meta.cached_groups, meta.cached_tokens) != (
                len(kv_cache.spec.groups),
                kv_cache.num_tokens,
            ):
                raise ValueError(
                    f"LCTModel: meta expects {meta.cached_groups} cached groups / {meta.cached_tokens} tokens, "
                    f"the KV cache holds {len(kv_cache.spec.groups)} / {kv_cache.num_tokens}; build meta with cached=cache.spec"
                )
        elif meta.cached_groups:
            raise ValueError("LCTModel: meta was built with cached=..., pass kv_cache")
