"""Multi-shot sampling (SPEC §7): joint, visual-conditioned, auto-regressive (recompute or KV
cache), history pool with selection, shot extension, compositional generation; ``lct-sample``.

Modules, one job each:

* ``scene_file``   the YAML/JSON scene file -> ``SceneRequest`` (validation)
* ``schedule``     shifted Euler time grid, resolution shift rule, per-shot seeded noise
* ``inputs``       ``PromptEmbedding``, ``TargetShot``, ``ConditionShot``
* ``sampler``      ``Sampler``: the ODE + CFG for one scene (``generate``, ``generate_cached``)
* ``kv_context``   ``ContextCache``: per-branch KV caches tied to an ordered context
* ``modes``        ``generate_scene`` (joint / ar / ar-kv), ``next_shot``
* ``history_pool`` ``HistoryPool`` / ``PoolShot`` on disk (pool.json + latents)
* ``prompts``      text encoder -> ``PromptEmbedding`` (memoised; negative / empty prompt)
* ``media``        shot sizes -> latent shapes; condition images / videos / latents -> latents
* ``checkpoint_io`` consolidated safetensors or DCP step dir -> ``LoadedModel`` (either family)
* ``writers``      mp4 (PyAV), contact sheet (PIL), latents (safetensors)
* ``pipeline``     scene request -> output folder; ``interactive`` pool commands; ``cli``
"""

from lct_train.sample.inputs import ConditionShot, PromptEmbedding, TargetShot
from lct_train.sample.sampler import Sampler, SamplingError, SamplingSettings

__all__ = ["ConditionShot", "PromptEmbedding", "Sampler", "SamplingError", "SamplingSettings",
           "TargetShot"]
