"""Input embeddings: latent patches (`PatchEmbed`), per-group conditioning vectors
(`ConditionEmbedding`: timestep + pooled text + optional guidance), and the
timestep + mean-pooled-text embedding of the token refiner."""

from __future__ import annotations

import torch
from torch import nn

from lct_train.model.layers import TextProjection, TimestepEmbedding, timestep_sinusoid


class PatchEmbed(nn.Module):
    """A Linear over patch vectors ``(c, pt, ph, pw)``: diffusers' Conv3d weight, flattened."""

    def __init__(self, patch_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_dim, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.proj(patches)


class ConditionEmbedding(nn.Module):
    """Per-group conditioning ``temb [G, D]`` (diffusers ``HunyuanVideoConditionEmbedding``)."""

    def __init__(self, dim: int, pooled_dim: int, time_freq_dim: int, guidance_embeds: bool):
        super().__init__()
        self.time_freq_dim = time_freq_dim
        self.timestep_embedder = TimestepEmbedding(time_freq_dim, dim)
        self.text_embedder = TextProjection(pooled_dim, dim)
        self.guidance_embedder = TimestepEmbedding(time_freq_dim, dim) if guidance_embeds else None

    def forward(
        self, timestep: torch.Tensor, pooled: torch.Tensor, guidance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``timestep [G]`` (already scaled), ``pooled [G, pooled_dim]``, ``guidance [G]`` (scaled)."""
        dtype = pooled.dtype
        temb = self.timestep_embedder(timestep_sinusoid(timestep, self.time_freq_dim).to(dtype))
        temb = temb + self.text_embedder(pooled)
        if self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(
                timestep_sinusoid(guidance, self.time_freq_dim).to(dtype)
            )
        return temb


class TimestepTextEmbedding(nn.Module):
    """Token-refiner conditioning: timestep + projected mean text (``CombinedTimestepTextProjEmbeddings``)."""

    def __init__(self, dim: int, text_dim: int, time_freq_dim: int):
        super().__init__()
        self.time_freq_dim = time_freq_dim
        self.timestep_embedder = TimestepEmbedding(time_freq_dim, dim)
        self.text_embedder = TextProjection(text_dim, dim)

    def forward(self, timestep: torch.Tensor, mean_text: torch.Tensor) -> torch.Tensor:
        sinusoid = timestep_sinusoid(timestep, self.time_freq_dim).to(mean_text.dtype)
        return self.timestep_embedder(sinusoid) + self.text_embedder(mean_text)
