"""The inference modes of SPEC §7 on top of ``Sampler``.

* ``joint``: all target shots denoised together; shots with a condition (clip, image, latent)
  are held at ``t_c`` in the same forward (visual-conditioned / compositional generation).
* ``ar``: one target shot at a time; its context (any subset of the earlier shots, by index:
  the history pool with selection) is given as condition shots and recomputed at every step.
  Works with either mask.
* ``ar-kv``: as ``ar`` but the context's K/V are computed once at ``t_c`` per branch and reused
  for every step (context-causal models only, ``kv_context.py``).

Shot extension is a shot whose prompt has no ``[SHOT CUT]`` marker; it needs no special path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lct_train.sample.history_pool import PoolShot, default_context
from lct_train.sample.inputs import ConditionShot, PromptEmbedding, TargetShot
from lct_train.sample.kv_context import ContextCache
from lct_train.sample.sampler import Sampler, SamplingError

JOINT, AR, AR_KV = "joint", "ar", "ar-kv"
MODES = (JOINT, AR, AR_KV)  # the one list (scene file, lct-sample)
AR_MODES = (AR, AR_KV)
GIVEN = "given"


@dataclass(frozen=True)
class PlannedShot:
    """A shot of an encoded scene: what to generate, or the condition to hold."""

    text: str  # the prompt as encoded (with the cut marker when it is a cut)
    prompt: PromptEmbedding
    seed: int
    latent_shape: tuple[int, int, int, int]
    condition: torch.Tensor | None = None  # clean latent of a given shot
    context: tuple[int, ...] | None = None  # ar modes: earlier shots it sees (None = default)
    source: str | None = None  # condition media file, for the record
    noise: torch.Tensor | None = None  # initial noise of a generated shot (else from its seed)

    def as_condition(self) -> ConditionShot:
        return ConditionShot(self.prompt, self.condition, self.seed)

    def as_target(self) -> TargetShot:
        return TargetShot(self.prompt, self.latent_shape, self.seed, self.noise)


def generate_scene(
    sampler: Sampler, global_prompt: PromptEmbedding | None, shots: Sequence[PlannedShot],
    mode: str,
) -> list[PoolShot]:
    """Runs ``mode`` on the scene; returns every shot (given ones included) as pool shots.
    ``global_prompt=None``: the scene has no global group."""
    if mode == JOINT:
        return _joint(sampler, global_prompt, shots)
    if mode in AR_MODES:
        return _autoregressive(sampler, global_prompt, shots, kv_cache=mode == AR_KV)
    raise SamplingError(f"unknown mode {mode!r}; one of {MODES}")


def next_shot(
    sampler: Sampler,
    global_prompt: PromptEmbedding | None,
    history: Sequence[ConditionShot],
    context: Sequence[int],
    target: TargetShot,
    cache: ContextCache | None = None,
) -> torch.Tensor:
    """Generates one shot after ``history[context]``: full recompute, or with ``cache``."""
    bad = [i for i in context if not 0 <= i < len(history)]
    if bad:
        raise SamplingError(f"context {list(context)}: {bad} not in the history (0..{len(history) - 1})")
    if cache is None:
        return sampler.generate(global_prompt, [history[i] for i in context] + [target])[-1]
    return sampler.generate_cached(cache.prepare(context, history), target)


def _joint(sampler, global_prompt, shots) -> list[PoolShot]:
    inputs = [s.as_condition() if s.condition is not None else s.as_target() for s in shots]
    latents = sampler.generate(global_prompt, inputs)
    given = tuple(i for i, s in enumerate(shots) if s.condition is not None)
    return [_pool_shot(s, z, JOINT, given) for s, z in zip(shots, latents)]


def _autoregressive(sampler, global_prompt, shots, *, kv_cache: bool) -> list[PoolShot]:
    cache = ContextCache(sampler, global_prompt) if kv_cache else None
    mode = AR_KV if kv_cache else AR
    history: list[ConditionShot] = []
    out: list[PoolShot] = []
    for index, shot in enumerate(tqdm(shots, desc="shots", disable=not sampler.progress)):
        if shot.condition is not None:
            latent, context = shot.condition, ()
        else:
            context = shot.context
            if context is None:
                context = default_context(index, sampler.window)
            latent = next_shot(sampler, global_prompt, history, context, shot.as_target(), cache)
        history.append(ConditionShot(shot.prompt, latent, shot.seed))
        out.append(_pool_shot(shot, latent, mode, tuple(context)))
    return out


def _pool_shot(shot: PlannedShot, latent, mode: str, context: tuple[int, ...]) -> PoolShot:
    given = shot.condition is not None
    return PoolShot(latent=latent.detach().cpu(), prompt=shot.text, seed=shot.seed,
                    mode=GIVEN if given else mode, context=() if given else context,
                    source=shot.source)
