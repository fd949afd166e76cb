"""What the sampler consumes: encoded prompts, shots to generate, shots given as conditions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptEmbedding:
    """One encoded prompt: valid text tokens ``[L, text_dim]`` and the pooled vector, ``None``
    for a model that takes none (``config.takes_pooled``: the Wan family)."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None = None  # [pooled_dim]

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or (self.pooled is not None and self.pooled.dim() != 1):
            pooled = None if self.pooled is None else tuple(self.pooled.shape)
            raise ValueError(f"PromptEmbedding: tokens must be [L, D] and pooled [D'] or None, "
                             f"got {tuple(self.tokens.shape)} and {pooled}")


@dataclass(frozen=True)
class TargetShot:
    """A shot to generate: its prompt, clean-latent shape ``(C, F, H, W)`` and seed; ``noise``
    (that shape) starts the ODE instead of the seed's first draw when given."""

    prompt: PromptEmbedding
    latent_shape: tuple[int, int, int, int]
    seed: int
    noise: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.noise is not None and tuple(self.noise.shape) != tuple(self.latent_shape):
            raise ValueError(f"TargetShot: noise of shape {list(self.noise.shape)}, the shot's "
                             f"latent shape is {list(self.latent_shape)}")


@dataclass(frozen=True)
class ConditionShot:
    """A shot held at ``t_c``: a given clip/image or an accepted history shot.

    It is noised once to ``t_c`` with the second draw of its own seed (``schedule.shot_noise``).
    """

    prompt: PromptEmbedding
    latent: torch.Tensor  # clean [C, F, H, W]
    seed: int

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return tuple(self.latent.shape)  # type: ignore[return-value]


Shot = TargetShot | ConditionShot
