"""Seeded per-scene augmentation: context-window truncation, image substitution, prompt dropout,
and the token-budget cut (SPEC §1, §5).

Every random choice comes from a generator seeded by ``(seed, source, epoch, key)``, so the
same scene in the same epoch is augmented identically on any rank, worker or resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lct_train.data.config import DataConfig
from lct_train.data.schema import BadSampleError, DatasetInfo, SceneRecord
from lct_train.data.seeding import stable_seed
from lct_train.model.geometry import patch_grid, scene_spec
from lct_train.model.layout import SceneSpec

IMAGE_FRAME_FIRST = "first"  # causal VAEs: only latent frame 0 encodes a lone image


@dataclass
class Scene:
    """A scene ready to pack: augmented tensors plus where it came from."""

    key: str
    source: str
    latents: list[torch.Tensor]  # shots [C, F, H, W]
    text: list[torch.Tensor]  # groups [L_g, D], global first
    pooled: torch.Tensor  # [G, Dp]
    spec: SceneSpec  # the token layout, built once here; packing and training read it
    truncated: bool = False  # cut to the context window or the token budget
    text_cut: tuple[int, ...] = ()  # (global, longest shot) prompt tokens before a window cut

    @property
    def tokens(self) -> int:
        """Joint tokens (text + video + dummy)."""
        return self.spec.num_tokens

    @property
    def shot_is_image(self) -> list[bool]:
        return [z.shape[1] == 1 for z in self.latents]


def fit_windows(text: list[torch.Tensor], window: int) -> list[torch.Tensor]:
    """A scene's prompts (global first) cut so that every shot's global + own tokens fit
    ``window`` (a Wan model's cross-attention window, `WanConfig.window_text_len`; 0: no cap).
    The global prompt keeps at least half the window when it needs it, each shot the rest."""
    if not window or len(text) < 2:
        return text
    longest = max(t.shape[0] for t in text[1:])
    if text[0].shape[0] + longest <= window:
        return text
    keep = min(text[0].shape[0], max(window // 2, window - longest))
    return [text[0][:keep]] + [t[: window - keep] for t in text[1:]]


def window_cut(text: list[torch.Tensor], window: int) -> tuple[list[torch.Tensor], tuple[int, ...]]:
    """``fit_windows`` and what it cut: ``(global, longest shot)`` tokens before, ``()`` if nothing."""
    fitted = fit_windows(text, window)
    if [t.shape[0] for t in fitted] == [t.shape[0] for t in text]:
        return fitted, ()
    return fitted, (text[0].shape[0], max(t.shape[0] for t in text[1:]))


def text_cut_message(key: str, scene_text: list[torch.Tensor], cut: tuple[int, ...], window: int) -> str:
    """One line on a scene whose prompts ``window_cut`` cut (now ``scene_text``)."""
    kept = scene_text[0].shape[0]
    return (f"scene {key}: global prompt {cut[0]} + longest shot prompt {cut[1]} tokens exceed the model's "
            f"text window {window}: cut to {kept} + at most {window - kept} (counted as loader/text_cut)")


def check_geometry(rec: SceneRecord, patch: tuple[int, int, int]) -> None:
    """Latent frames/height/width must be multiples of the model patch."""
    for i, z in enumerate(rec.latents):
        try:
            patch_grid(z.shape, patch)
        except ValueError:
            raise BadSampleError(rec.shard, rec.key, f"shot_{i} shape {tuple(z.shape)} not divisible by patch {patch}") from None


class Augmenter:
    """Applies the configured augmentations to decoded scenes."""

    def __init__(self, cfg: DataConfig, info: DatasetInfo, empty_tokens: torch.Tensor, empty_pooled: torch.Tensor):
        self.cfg, self.info = cfg, info
        self.empty_tokens, self.empty_pooled = empty_tokens.float(), empty_pooled.float()

    def spec(self, latents: list[torch.Tensor], text: list[torch.Tensor]) -> SceneSpec:
        return scene_spec([t.shape[0] for t in text], [z.shape for z in latents],
                          self.cfg.patch_size, self.cfg.dummy_grid)

    def __call__(self, rec: SceneRecord, source: str, epoch: int) -> Scene:
        cfg = self.cfg
        check_geometry(rec, cfg.patch_size)
        gen = torch.Generator().manual_seed(stable_seed(cfg.seed, "augment", source, epoch, rec.key))
        latents, text, pooled = list(rec.latents), list(rec.text), rec.pooled
        truncated = False
        n = len(latents)
        if n > cfg.max_shots:  # a random window of the context size; the global group stays
            start = int(torch.randint(n - cfg.max_shots + 1, (1,), generator=gen))
            keep = range(start, start + cfg.max_shots)
            latents = [latents[i] for i in keep]
            text = [text[0]] + [text[i + 1] for i in keep]
            pooled = torch.cat([pooled[:1], pooled[start + 1 : start + 1 + cfg.max_shots]])
            truncated = True
        draws = torch.rand(2 * len(latents) + 1, generator=gen)
        frames = torch.randint(1 << 30, (len(latents),), generator=gen)
        for i, z in enumerate(latents):
            if z.shape[1] > 1 and draws[i] < cfg.p_image:
                f = 0 if self.info.image_frame == IMAGE_FRAME_FIRST else int(frames[i]) % z.shape[1]
                latents[i] = z[:, f : f + 1]
        drop = draws[len(latents):] < torch.tensor([cfg.p_drop_global] + [cfg.p_drop_shot] * len(latents))
        if bool(drop.any()):
            pooled = pooled.clone()
            for g in torch.nonzero(drop).flatten().tolist():
                text[g] = self.empty_tokens
                pooled[g] = self.empty_pooled
        text, cut = window_cut(text, cfg.window_text_len)
        return Scene(rec.key, source, latents, text, pooled, self.spec(latents, text), truncated, cut)

    def fit_budget(self, scene: Scene) -> Scene | None:
        """Cuts trailing shots until the scene fits ``max_tokens`` (policy ``cut``), else None."""
        cfg = self.cfg
        if scene.tokens <= cfg.max_tokens:
            return scene
        if cfg.packing == "skip":
            return None
        for k in range(len(scene.latents) - 1, 0, -1):
            spec = SceneSpec(scene.spec.groups[: k + 1])  # the global group and shots 1..k
            if spec.num_tokens <= cfg.max_tokens:
                return Scene(scene.key, scene.source, scene.latents[:k], scene.text[: k + 1],
                             scene.pooled[: k + 1], spec, True, scene.text_cut)
        return None
