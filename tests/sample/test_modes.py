"""Inference modes on a tiny random model of each family (the MMDiT and Wan, ``family_kit``):
shapes, conditions held, KV cache == recompute (SPEC §8 invariant 6; on Wan the cache holds the
cross-attention K/V of the history's prompts too, one cache per guidance branch), history
selection, and the mode / window errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lct_train.sample.inputs import ConditionShot, TargetShot
from lct_train.sample.kv_context import ContextCache
from lct_train.sample.modes import AR, AR_KV, JOINT, PlannedShot, generate_scene, next_shot
from lct_train.sample.sampler import SamplingError
from tests.sample.tiny import LATENT_CHANNELS

SHAPES = [(LATENT_CHANNELS, 2, 4, 4), (LATENT_CHANNELS, 1, 4, 6), (LATENT_CHANNELS, 2, 4, 4),
          (LATENT_CHANNELS, 1, 2, 4), (LATENT_CHANNELS, 2, 4, 2)]
EXACT = {"rtol": 0.0, "atol": 1e-12}  # fp64: KV cache and recompute differ by rounding only


NUM_SHOTS = len(SHAPES)


def _scene(prompts, n=NUM_SHOTS, given=(), contexts=None):
    gen = torch.Generator().manual_seed(3)
    shots = []
    for i in range(n):
        text = f"[SHOT CUT] event {i}"
        cond = torch.randn(SHAPES[i], generator=gen, dtype=torch.float64) if i in given else None
        ctx = None if contexts is None else contexts.get(i)
        shots.append(PlannedShot(text, prompts.one(text), 100 + i, SHAPES[i], cond, ctx))
    return prompts.one("Character 1: a fox. [Environment] snow."), shots


@pytest.mark.parametrize("mode", [JOINT, AR, AR_KV])
def test_each_mode_returns_every_shot_with_its_shape(family_kit, mode):
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=3, given=(1,))
    out = generate_scene(make_sampler("causal"), global_prompt, shots, mode)
    assert [tuple(s.latent.shape) for s in out] == SHAPES[:3]
    assert [s.mode for s in out] == [mode, "given", mode]
    torch.testing.assert_close(out[1].latent, shots[1].condition, rtol=0, atol=0)
    assert all(torch.isfinite(s.latent).all() for s in out)


def test_joint_generation_depends_on_the_condition(family_kit):
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=2, given=(0,))
    sampler = make_sampler("bidirectional")
    a = generate_scene(sampler, global_prompt, shots, JOINT)[1].latent
    changed = [dataclasses.replace(shots[0], condition=shots[0].condition + 1.0), shots[1]]
    b = generate_scene(sampler, global_prompt, changed, JOINT)[1].latent
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("with_global", [True, False])
def test_kv_cache_generation_equals_recompute(family_kit, with_global):
    """SPEC §8 invariant 6, with CFG (two caches) and a condition shot in the history; without
    a global prompt the first shot starts from an empty cache."""
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, given=(1,))
    global_prompt = global_prompt if with_global else None
    sampler = make_sampler("causal", guidance=4.0)
    recompute = generate_scene(sampler, global_prompt, shots, AR)
    cached = generate_scene(sampler, global_prompt, shots, AR_KV)
    for r, c in zip(recompute, cached):
        torch.testing.assert_close(c.latent, r.latent, **EXACT)
        assert c.context == r.context


def test_kv_cache_with_a_non_contiguous_context_equals_recompute(family_kit):
    make_sampler, prompts = family_kit
    contexts = {2: (0,), 3: (0, 2), 4: (2, 0)}  # 4 reorders the context: the caches rebuild
    global_prompt, shots = _scene(prompts, contexts=contexts)
    sampler = make_sampler("causal")
    recompute = generate_scene(sampler, global_prompt, shots, AR)
    cached = generate_scene(sampler, global_prompt, shots, AR_KV)
    for r, c in zip(recompute, cached):
        torch.testing.assert_close(c.latent, r.latent, **EXACT)
    assert [s.context for s in cached] == [(), (0,), (0,), (0, 2), (2, 0)]


def test_history_selection_sees_only_the_chosen_shots(family_kit):
    """With context (0,), shot 2 must not change when shot 1 changes (causal model)."""
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=3, contexts={2: (0,)})
    sampler = make_sampler("causal")
    base = generate_scene(sampler, global_prompt, shots, AR)
    reseeded = [shots[0], dataclasses.replace(shots[1], seed=999), shots[2]]
    other = generate_scene(sampler, global_prompt, reseeded, AR)
    assert (base[1].latent - other[1].latent).abs().max() > 1e-4
    torch.testing.assert_close(other[2].latent, base[2].latent, **EXACT)


def test_context_cache_appends_when_the_context_grows_and_rebuilds_otherwise(family_kit):
    make_sampler, prompts = family_kit
    sampler = make_sampler("causal")
    global_prompt, shots = _scene(prompts, n=4, given=(0, 1, 2, 3))
    history = [ConditionShot(s.prompt, s.condition, s.seed) for s in shots]
    cache = ContextCache(sampler, global_prompt)
    cache.prepare((0,), history)
    cache.prepare((0, 1), history)
    cache.prepare((0, 1, 3), history)
    assert (cache.rebuilds, cache.appended_shots) == (1, 3)
    assert all(c.spec.num_shots == 3 for c in cache.caches.values())
    target = TargetShot(prompts.one("next"), SHAPES[0], 7)
    via_cache = next_shot(sampler, global_prompt, history, (2, 1), target, cache)
    assert cache.rebuilds == 2
    recompute = next_shot(sampler, global_prompt, history, (2, 1), target)
    torch.testing.assert_close(via_cache, recompute, **EXACT)


def test_bidirectional_model_refuses_the_kv_cache(family_kit):
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=2)
    with pytest.raises(SamplingError, match=r"ar-kv.*context-causal.*mask='bidirectional'"):
        generate_scene(make_sampler("bidirectional"), global_prompt, shots, AR_KV)


def test_window_limits_joint_scenes_and_ar_contexts(family_kit):
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=3)
    with pytest.raises(SamplingError, match="window of 2"):
        generate_scene(make_sampler("causal", window=2), global_prompt, shots, JOINT)
    too_long = _scene(prompts, n=3, contexts={2: (0, 1)})[1]
    with pytest.raises(SamplingError, match="window of 2"):
        generate_scene(make_sampler("causal", window=2), global_prompt, too_long, AR_KV)
    # the default AR context slides: the latest window-1 shots
    out = generate_scene(make_sampler("causal", window=2), global_prompt, shots, AR)
    assert [s.context for s in out] == [(), (0,), (1,)]


def test_shot_extension_is_the_prompt_without_the_cut_marker(family_kit):
    make_sampler, prompts = family_kit
    global_prompt, shots = _scene(prompts, n=2)
    extension = dataclasses.replace(shots[1], text="event 1", prompt=prompts.one("event 1"))
    sampler = make_sampler("causal")
    cut = generate_scene(sampler, global_prompt, shots, AR)[1]
    ext = generate_scene(sampler, global_prompt, [shots[0], extension], AR)[1]
    assert ext.prompt == "event 1"
    assert cut.prompt.startswith("[SHOT CUT] ")
    assert (cut.latent - ext.latent).abs().max() > 1e-6
