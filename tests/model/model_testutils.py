"""Model-test helpers: scene specs and random inputs for a packed batch."""

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.layout import GroupSpec, PackedMeta, SceneSpec


def scene(*shots, text_global: int | None = 3, dummy=(1, 2, 2)) -> SceneSpec:
    """``scene((text_len, grid), ...)`` with an optional global group first."""
    groups = [GroupSpec(text_global, dummy, is_global=True)] if text_global is not None else []
    return SceneSpec(tuple(groups) + tuple(GroupSpec(t, g) for t, g in shots))


def group_scene(meta: PackedMeta) -> torch.Tensor:
    """``[G]`` scene index of every group, from the host specs."""
    return torch.tensor([s for s, spec in enumerate(meta.specs) for _ in spec.groups])


def group_is_global(meta: PackedMeta) -> torch.Tensor:
    """``[G]`` bool, from the host specs."""
    return torch.tensor([g.is_global for spec in meta.specs for g in spec.groups])


def joint_is_text(meta: PackedMeta) -> torch.Tensor:
    """``[L]`` bool: joint rows that hold text tokens."""
    out = torch.zeros(meta.num_joint, dtype=torch.bool)
    out[meta.text_to_joint] = True
    return out


def random_inputs(cfg: ModelConfig, meta: PackedMeta, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(meta.num_video, cfg.patch_dim, generator=gen, dtype=dtype)
    video[meta.video_shot < 0] = 0.0
    text = torch.randn(meta.num_text, cfg.text_dim, generator=gen, dtype=dtype)
    pooled = torch.randn(meta.num_groups, cfg.pooled_dim, generator=gen, dtype=dtype)
    timesteps = torch.rand(meta.num_groups, generator=gen, dtype=dtype)
    timesteps[group_is_global(meta)] = 0.0
    return video, text, pooled, timesteps
