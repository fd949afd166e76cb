"""KV caches of the history context for auto-regressive sampling with a context-causal model.

A ``ContextCache`` holds one model ``KVCache`` per guidance branch (their prompts differ, so
their K/V differ) for the groups ``[global, context shots at t_c]`` of one scene (no global group without a
global prompt). It is tied to
an ordered context (a tuple of pool indices): when the next shot's context extends the cached
one by appending, only the new shots run through the model (one forward at ``t_c``, cache
write); any other context (a reordering, a dropped shot) rebuilds the caches from the global
group. With a context-causal model both give exactly the K/V that a full recompute would
(SPEC §8 invariant 6).
"""

from __future__ import annotations

from collections.abc import Sequence

from lct_train.sample.inputs import ConditionShot, PromptEmbedding
from lct_train.sample.sampler import Group, Sampler, SamplingError


def require_causal(mask: str, model: str = "this checkpoint") -> None:
    """The one check that mode ar-kv has a context-causal model (``SamplingError`` otherwise)."""
    if mask != "causal":
        raise SamplingError(
            "mode 'ar-kv' needs a context-causal model (KV-cache sampling is exact only with "
            f"mask='causal', i.e. after causal fine-tuning); {model} uses mask={mask!r}: use mode "
            "'ar' (recompute) instead, or pass --mask causal for a causal-FT export")


class ContextCache:
    """Per-branch KV caches of ``[global] + context`` for one scene (module docstring)."""

    def __init__(self, sampler: Sampler, global_prompt: PromptEmbedding | None) -> None:
        require_causal(sampler.mask)
        self.sampler = sampler
        self.global_prompt = global_prompt
        self.context: tuple[int, ...] | None = None  # None: nothing cached yet
        self.caches: dict = {}
        # counters of the two paths (rebuilds from the global group, shots appended): what
        # tells the append path from a rebuild, which give the same K/V by design
        self.rebuilds = 0
        self.appended_shots = 0

    def prepare(self, context: Sequence[int], pool: Sequence[ConditionShot]) -> dict:
        """Makes the caches hold ``[global] + pool[context]`` at ``t_c``; returns them."""
        context = tuple(context)
        self.sampler.check_window(len(context) + 1)
        cached = self.context
        if cached is not None and context[:len(cached)] == cached:
            new: list[Group] = []
            fresh = context[len(cached):]
        else:
            self.caches = {b: self.sampler.model.new_kv_cache() for b in self.sampler.branches}
            new = self.sampler.scene_groups(self.global_prompt)
            fresh = context
            self.rebuilds += 1
        new += [self.sampler.condition_group(pool[i]) for i in fresh]
        if new:
            for branch, cache in self.caches.items():
                write_groups(self.sampler, new, branch, cache)
        self.appended_shots += len(fresh)
        self.context = context
        return self.caches


def write_groups(sampler: Sampler, groups: Sequence[Group], branch: str, cache) -> None:
    """Runs ``groups`` after the cached ones and appends their K/V to ``cache``."""
    cache.write = True
    try:
        sampler.velocity(groups, sampler.branch_input(groups, branch, cache), kv_cache=cache)
    finally:
        cache.write = False
    cache.commit()
