"""The scene an estimate runs: S equal shots (+ the global group) of a given token count, or
of an explicit shot grid. One scene per micro-batch (the token budget ``data.max_tokens``)."""

from __future__ import annotations

from lct_train.core.errors import ConfigError
from lct_train.estimate.config import PREFIX, EstimateConfig
from lct_train.model.layout import GroupSpec, SceneSpec


def shot_grid(est: EstimateConfig, model) -> tuple[int, int, int]:
    """The largest ``(F, H, W)`` shot with ``estimate.frame`` whose scene fits ``tokens``."""
    if est.grid:
        return tuple(est.grid)
    h, w = est.frame
    fixed = est.shots * est.text_len
    if est.with_global:
        fixed += est.text_len + model.num_dummy_tokens
    frames = (est.tokens - fixed) // (est.shots * h * w)
    if frames < 1:
        raise ConfigError(PREFIX + "tokens", f"{est.tokens} tokens cannot hold {est.shots} shots "
                          f"of one {h}x{w}-patch frame plus {fixed} text/dummy tokens")
    return frames, h, w


def scene_spec(est: EstimateConfig, model) -> SceneSpec:
    """The scene of ``est`` for a model config of either family (its dummy grid; a Wan model's
    shot prompts, global + own, must fit its text window)."""
    window, prompts = model.window_text_len, est.text_len * (2 if est.with_global else 1)
    if window and prompts > window:
        raise ConfigError(PREFIX + "text_len", f"{est.text_len} tokens per prompt: a shot's "
                          f"{'global + own ' if est.with_global else ''}prompts ({prompts}) "
                          f"exceed the model's text window of {window} tokens")
    grid = shot_grid(est, model)
    groups = [GroupSpec(est.text_len, model.dummy_grid, is_global=True)] if est.with_global else []
    groups += [GroupSpec(est.text_len, grid) for _ in range(est.shots)]
    return SceneSpec(tuple(groups))


def describe(spec: SceneSpec, model) -> str:
    """E.g. ``9 shots x 16x30x30 patches (+128 text) + global (16 dummy +128 text) = 131,... tokens``."""
    shots = [g for g in spec.groups if not g.is_global]
    f, h, w = shots[0].grid
    pt, ph, pw = model.patch_size
    text = f"{len(shots)} shot(s) x {f}x{h}x{w} patches (latent {f * pt}x{h * ph}x{w * pw}) " \
           f"+ {shots[0].text_len} text"
    for g in spec.groups:
        if g.is_global:
            text += f"; global group {g.video_len} dummy + {g.text_len} text"
    return f"{text}; {spec.num_tokens:,} joint tokens"
