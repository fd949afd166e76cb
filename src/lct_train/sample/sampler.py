"""The rectified-flow ODE sampler for one scene (B = 1 in the packed format, design §5).

Euler steps on the shifted grid of ``schedule.py``; classifier-free guidance on the text:

* cond branch: every group keeps its prompt;
* uncond branch: *every* group's prompt (global, targets and conditions alike) is replaced by
  the negative-prompt embedding (``settings.negative_prompt`` encoded, ``""`` by default: the
  empty-prompt embedding of the dropout that training applies per group, SPEC §5), so the
  guidance direction is "all text" vs "no text" (or vs the negative prompt, as Wan's true CFG)
  while the visual context is the same;
* ``v = v_uncond + guidance * (v_cond - v_uncond)``; ``guidance == 1`` runs the cond branch
  only. A model with a guidance embedding gets ``embedded_guidance`` in both branches.

A scene without a global prompt (``global_prompt=None``) has no global group: a one-shot scene
is then the source model's single-shot forward (SPEC §2/§3, §9). The global group's video part
is the config's dummy block (``num_dummy_tokens`` / ``dummy_grid``: none on Wan, whose global
group is text only); pooled rows go to the model only when it takes them
(``config.takes_pooled``). Group timesteps: global group 0, condition shots ``t_c`` (noised
once, outputs discarded), generated shots the current ODE time. Each branch is its own forward (and, with a KV cache,
its own cache): one scene per forward keeps cache and recompute paths identical.

Within one ``generate`` / ``generate_cached`` call only the video tokens and timesteps change
between steps, so each branch's packed metadata (and the attention backend's plan memoised in
it), text stream and pooled rows are built once per call (``branch_inputs``).

Sequence parallelism (``sp``, ``lct-sample --sp N`` under torchrun): every rank of the SP group
holds the same ODE state; a forward runs this rank's slice of the scene (its heads of every
attention, its heads of the KV cache for all history tokens) and all-gathers the velocity.
Noise, timesteps and the Euler update are those of one process, so the latents are the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lct_train.core.flow import euler_step, noise_latents
from lct_train.model.config import ModelConfig
from lct_train.model.geometry import patch_grid, patchify, unpatchify
from lct_train.model.layout import (
    GroupSpec,
    PackedMeta,
    SceneSpec,
)
from lct_train.model.sampling_defaults import SamplingDefaults
from lct_train.model.wan.config import WanConfig
from lct_train.model.wan.layout import WanMeta
from lct_train.parallel.sp_inputs import local_inputs
from lct_train.parallel.ulysses import SPGroup
from lct_train.sample.inputs import ConditionShot, PromptEmbedding, Shot, TargetShot
from lct_train.sample.schedule import resolution_shift, sampling_timesteps, shot_noise

COND, UNCOND = "cond", "uncond"
GLOBAL_TIMESTEP = 0.0
# the sampling defaults (also those of the scene file and the lct-sample pool commands)
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
DEFAULT_T_C = 0.3  # inside the paper's 0.1..0.5 range (§4.2)


class SamplingError(ValueError):
    """A sampling request the model cannot serve (window, mask, shapes)."""


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    embedded_guidance: float | None = None
    t_c: float = DEFAULT_T_C
    shift: float | None = None  # None: schedule.resolution_shift of the generated shot
    negative_prompt: str | None = None  # uncond branch's text (None: ""); the caller encodes it

    def __post_init__(self) -> None:
        """The one check of the sampling settings (scene files, the CLI and the API build these)."""
        if self.steps < 1:
            raise SamplingError(f"steps must be >= 1, got {self.steps}")
        if self.guidance < 1.0:
            raise SamplingError(f"guidance must be >= 1 (1 = no guidance), got {self.guidance}")
        if not 0.0 <= self.t_c < 1.0:
            raise SamplingError(f"t_c must be in [0, 1), got {self.t_c}")
        if self.shift is not None and self.shift <= 0:
            raise SamplingError(f"shift must be > 0, got {self.shift}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise SamplingError(f"negative_prompt must be a string, got {self.negative_prompt!r}")


# SamplingSettings' fields
SETTING_NAMES = ("steps", "guidance", "embedded_guidance", "t_c", "shift", "negative_prompt")


def resolve_settings(given: dict, preset: SamplingDefaults | None = None) -> SamplingSettings:
    """The settings of a call: each value from ``given`` (scene file, flags, a pool) unless it is
    ``None``, else the model preset's (``ModelConfig.sampling``), else ``SamplingSettings``'s."""
    preset_values = preset.given() if preset is not None else {}
    values = {**preset_values, **{k: v for k, v in given.items() if v is not None}}
    return SamplingSettings(**values)


@dataclass(eq=False)
class Group:
    """One group of the scene being sampled: prompt, current video tokens, grid, timestep."""

    prompt: PromptEmbedding
    tokens: torch.Tensor  # [V, patch_dim]
    grid: tuple[int, int, int]
    t: float
    is_global: bool = False


@dataclass(frozen=True)
class BranchInputs:
    """What a forward of one guidance branch needs besides the video tokens and timesteps:
    fixed while the groups' prompts, grids and the cache they follow are fixed."""

    meta: PackedMeta | WanMeta
    text: torch.Tensor  # [Nt, text_dim] (this rank's part under sequence parallelism)
    pooled: torch.Tensor | None  # [G, pooled_dim]; None for a model without pooled text


class Sampler:
    """Holds the model and the settings; generates shots of one scene at a time.

    ``mask`` is the attention mask the checkpoint was trained with ("bidirectional" after LCT,
    "causal" after causal fine-tuning); ``window`` the most shots one forward may hold.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig | WanConfig,
        negative_prompt: PromptEmbedding,
        *,
        mask: str,
        window: int,
        settings: SamplingSettings,
        progress: bool = False,
        sp: SPGroup | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """``negative_prompt``: the uncond branch's embedding (of ``settings.negative_prompt``,
        the empty prompt by default). ``dtype``: of the model's inputs (default: its first
        parameter's; a sharded model in training passes its compute dtype, which its stored
        parameters need not have)."""
        self.model = model.eval()
        self.sp = sp
        self.config = config
        self.mask = mask
        self.window = window
        self.settings = settings
        self.progress = progress
        param = next(model.parameters())
        self.device, self.dtype = param.device, dtype or param.dtype
        # the ODE state and the timesteps stay in >= fp32 whatever the model's dtype
        self.state_dtype = torch.promote_types(self.dtype, torch.float32)
        self.negative_prompt = self._to_device(negative_prompt)

    # ---- building blocks -------------------------------------------------------------------

    @property
    def branches(self) -> tuple[str, ...]:
        return (COND,) if self.settings.guidance == 1.0 else (COND, UNCOND)

    def grid_of(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """Patch grid of a ``[C, F, H, W]`` latent (``SamplingError`` if it does not fit)."""
        c = latent_shape[0]
        if c != self.config.latent_channels:
            raise SamplingError(f"latent has {c} channels, the model takes "
                                f"{self.config.latent_channels}")
        try:
            return patch_grid(latent_shape, self.config.patch_size)
        except ValueError as err:
            raise SamplingError(str(err)) from None

    def global_group(self, prompt: PromptEmbedding) -> Group:
        dummy = torch.zeros(self.config.num_dummy_tokens, self.config.patch_dim,
                            device=self.device, dtype=self.state_dtype)
        return Group(self._to_device(prompt), dummy, self.config.dummy_grid, GLOBAL_TIMESTEP, True)

    def condition_group(self, shot: ConditionShot) -> Group:
        """A condition shot noised to ``t_c`` with its own seed (second draw)."""
        grid = self.grid_of(shot.latent_shape)
        dtype = self.state_dtype
        noise = shot_noise(shot.seed, shot.latent_shape, dtype).condition.to(self.device)
        z0 = shot.latent.to(self.device, dtype)
        t_c = torch.tensor(self.settings.t_c, dtype=dtype, device=self.device)
        z_c = noise_latents(z0, noise, t_c)
        return Group(self._to_device(shot.prompt), self._patchify(z_c), grid, self.settings.t_c)

    def target_group(self, shot: TargetShot) -> Group:
        """A shot to generate, at pure noise: its own ``noise``, else the first draw of its seed."""
        grid = self.grid_of(shot.latent_shape)
        noise = shot.noise
        if noise is None:
            noise = shot_noise(shot.seed, shot.latent_shape, self.state_dtype).initial
        return Group(self._to_device(shot.prompt), self._patchify(noise), grid, 1.0)

    def timesteps_for(self, targets: Sequence[Group]) -> list[float]:
        shift = self.settings.shift
        if shift is None:
            shift = resolution_shift(max(g.tokens.shape[0] for g in targets))
        return sampling_timesteps(self.settings.steps, shift)

    def branch_input(self, groups: Sequence[Group], branch: str, kv_cache=None) -> BranchInputs:
        """Packed metadata, text stream and pooled rows of ``groups`` in ``branch`` (after the
        groups cached in ``kv_cache``, if any)."""
        prompts = [g.prompt if branch == COND else self.negative_prompt for g in groups]
        spec = SceneSpec(tuple(GroupSpec(p.tokens.shape[0], g.grid, g.is_global)
                               for p, g in zip(prompts, groups)))
        try:  # e.g. a Wan window (global + own prompt) longer than the model's text_len
            meta = self.config.build_meta([spec], mask=self.mask,
                                          cached=None if kv_cache is None else kv_cache.spec,
                                          device=self.device)
        except ValueError as err:
            raise SamplingError(f"the scene does not fit the model: {err}") from None
        # this rank's slice of the scene under sequence parallelism (parallel.sp_inputs)
        meta, _, text = local_inputs(meta, self.sp, (), torch.cat([p.tokens for p in prompts]))
        pooled = None
        if self.config.takes_pooled:
            if any(p.pooled is None for p in prompts):
                raise SamplingError("the model takes a pooled text vector: a prompt has none")
            pooled = torch.stack([p.pooled for p in prompts])
        return BranchInputs(meta, text, pooled)

    def branch_inputs(self, groups: Sequence[Group], caches: dict | None = None) -> dict:
        """``{branch: BranchInputs}`` for every guidance branch (each after its own cache)."""
        return {b: self.branch_input(groups, b, None if caches is None else caches[b])
                for b in self.branches}

    @torch.no_grad()
    def velocity(self, groups: Sequence[Group], inputs: BranchInputs, kv_cache=None) -> torch.Tensor:
        """One forward of ``groups`` (after the cached groups, if any): video-stream velocity.
        ``inputs`` is ``branch_input`` of the same groups, branch and cache."""
        timesteps = torch.tensor([g.t for g in groups], device=self.device,
                                 dtype=self.state_dtype)
        guidance = None
        if self.config.guidance_embeds:
            value = self.settings.embedded_guidance
            if value is None:
                raise SamplingError("the model has a guidance embedding: set embedded_guidance")
            guidance = torch.full_like(timesteps, value)
        video = torch.cat([g.tokens for g in groups]).to(self.dtype)
        shard = inputs.meta.shard
        if shard is not None:
            video = shard.local_video(video)
        velocity = self.model(video, inputs.text, inputs.pooled, timesteps, inputs.meta,
                              guidance=guidance, kv_cache=kv_cache)
        if shard is not None:  # every rank continues the ODE with the whole velocity
            velocity = shard.gather_video(velocity)
        return velocity.to(self.state_dtype)

    def guided_velocity(
        self, groups: Sequence[Group], inputs: dict, caches: dict | None = None
    ) -> torch.Tensor:
        """CFG-combined velocity of ``groups``; ``inputs`` from ``branch_inputs(groups, caches)``
        (each branch with its own cache, if given)."""
        out = {b: self.velocity(groups, inputs[b], None if caches is None else caches[b])
               for b in self.branches}
        if len(out) == 1:
            return out[COND]
        return out[UNCOND] + self.settings.guidance * (out[COND] - out[UNCOND])

    # ---- generation ----------------------------------------------------------------------

    def scene_groups(self, global_prompt: PromptEmbedding | None) -> list[Group]:
        """The groups before the shots: the global group, or none without a global prompt."""
        return [] if global_prompt is None else [self.global_group(global_prompt)]

    def generate(
        self, global_prompt: PromptEmbedding | None, shots: Sequence[Shot]
    ) -> list[torch.Tensor]:
        """Joint / visual-conditioned generation of one scene: every ``TargetShot`` is denoised
        together, every ``ConditionShot`` is held at ``t_c``. Returns clean latents for all
        shots in order (conditions returned as given). With one target and the history as
        conditions this is also auto-regressive generation with full recompute."""
        self.check_window(len(shots))
        groups = self.scene_groups(global_prompt)
        first = len(groups)
        groups += [self.target_group(s) if isinstance(s, TargetShot) else self.condition_group(s)
                   for s in shots]
        targets = [i + first for i, s in enumerate(shots) if isinstance(s, TargetShot)]
        if not targets:
            raise SamplingError("nothing to generate: every shot is a condition")
        offsets = _video_offsets(groups)
        ts = self.timesteps_for([groups[i] for i in targets])
        inputs = self.branch_inputs(groups)
        for t, t_next in self._steps(ts):
            for i in targets:
                groups[i].t = t
            v = self.guided_velocity(groups, inputs)
            for i in targets:
                g = groups[i]
                g.tokens = euler_step(g.tokens, v[offsets[i]:offsets[i + 1]], t, t_next)
        return [self._unpatchify(g.tokens, s.latent_shape) if isinstance(s, TargetShot)
                else s.latent for g, s in zip(groups[first:], shots)]

    def generate_cached(self, caches: dict, target: TargetShot) -> torch.Tensor:
        """Denoises ``target`` after the context held in ``caches`` (one KV cache per branch,
        see ``kv_context.ContextCache``); only the target's tokens run through the model."""
        group = self.target_group(target)
        inputs = self.branch_inputs([group], caches)
        for t, t_next in self._steps(self.timesteps_for([group])):
            group.t = t
            group.tokens = euler_step(group.tokens, self.guided_velocity([group], inputs, caches),
                                      t, t_next)
        return self._unpatchify(group.tokens, target.latent_shape)

    def check_window(self, num_shots: int) -> None:
        if num_shots > self.window:
            raise SamplingError(f"{num_shots} shots in one forward exceed the model's context "
                                f"window of {self.window} shots")

    # ---- helpers ---------------------------------------------------------------------------

    def _steps(self, ts: list[float]):
        pairs = list(itertools.pairwise(ts))
        return tqdm(pairs, desc="steps", leave=False, disable=not self.progress)

    def _patchify(self, latent: torch.Tensor) -> torch.Tensor:
        return patchify(latent.to(self.device, self.state_dtype), self.config.patch_size)

    def _unpatchify(self, tokens: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        return unpatchify(tokens, self.grid_of(shape), self.config.patch_size,
                          self.config.latent_channels)

    def _to_device(self, prompt: PromptEmbedding) -> PromptEmbedding:
        pooled = None if prompt.pooled is None else prompt.pooled.to(self.device, self.dtype)
        return PromptEmbedding(prompt.tokens.to(self.device, self.dtype), pooled)


def _video_offsets(groups: Sequence[Group]) -> list[int]:
    offsets = [0]
    for g in groups:
        offsets.append(offsets[-1] + g.tokens.shape[0])
    return offsets
