"""Interactive direction on a history pool: propose the next shot, regenerate it, add a given
shot. Each call is independent (the pool on disk carries the state between calls)."""

from __future__ import annotations

import os

from lct_train.sample.history_pool import HistoryPool, PoolShot
from lct_train.sample.inputs import ConditionShot, TargetShot
from lct_train.sample.kv_context import ContextCache
from lct_train.sample.media import encode_condition, latent_shape
from lct_train.sample.modes import AR, AR_KV, AR_MODES, GIVEN, next_shot
from lct_train.sample.pipeline import Toolkit
from lct_train.sample.sampler import SamplingError, SamplingSettings
from lct_train.sample.scene_file import ShotSize


def propose_shot(
    pool: HistoryPool,
    kit: Toolkit,
    settings: SamplingSettings,
    *,
    prompt: str,
    seed: int,
    size: ShotSize,
    context: tuple[int, ...] | None = None,
    mode: str = AR,
) -> PoolShot:
    """Generates a shot after ``pool.shots[context]`` and makes it the pool's pending shot.

    ``prompt`` is the full prompt (with the cut marker when it is a cut). ``context`` defaults
    to the latest ``window - 1`` accepted shots.
    """
    if mode not in AR_MODES:
        raise SamplingError(f"interactive shots use mode 'ar' or 'ar-kv', not {mode!r}")
    window = kit.loaded.window
    context = pool.default_context(window) if context is None else tuple(context)
    pool.check_context(context)
    if len(context) + 1 > window:
        raise SamplingError(f"context {list(context)} plus the new shot exceeds the model's "
                            f"window of {window} shots")
    sampler = kit.sampler(settings)
    cache = None
    global_prompt = None if pool.global_prompt is None else kit.prompts.one(pool.global_prompt)
    if mode == AR_KV:
        cache = ContextCache(sampler, global_prompt)  # raises for a bidirectional model
    embedded = kit.prompts([s.prompt for s in pool.shots] + [prompt])
    history = [ConditionShot(e, s.latent, s.seed) for e, s in zip(embedded, pool.shots)]
    target = TargetShot(embedded[-1], latent_shape(kit.codec, size, kit.loaded.config.patch_size),
                        seed)
    latent = next_shot(sampler, global_prompt, history, context, target, cache)
    shot = PoolShot(latent=latent.detach().cpu(), prompt=prompt, seed=seed, mode=mode,
                    context=context)
    pool.propose(shot)
    return shot


def add_given(
    pool: HistoryPool, kit: Toolkit, *, condition: str | os.PathLike, prompt: str, seed: int,
    size: ShotSize | None,
) -> int:
    """Encodes ``condition`` (image, video or latent) and accepts it as the next pool shot."""
    latent = encode_condition(condition, kit.codec, size)
    return pool.add(PoolShot(latent=latent, prompt=prompt, seed=seed, mode=GIVEN,
                             source=str(condition)))
