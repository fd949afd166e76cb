"""The sampler's arithmetic against an oracle model whose velocity is exact for known latents:
Euler on straight rectified-flow paths must land on them, whatever the shift and guidance."""

from __future__ import annotations

import pytest
import torch

from lct_train.model.geometry import patchify
from lct_train.model.sampling_defaults import SamplingDefaults
from lct_train.sample.inputs import ConditionShot, PromptEmbedding, TargetShot
from lct_train.sample.sampler import Sampler, SamplingError, SamplingSettings, resolve_settings
from lct_train.sample.schedule import shot_noise
from tests.sample.tiny import LATENT_CHANNELS


class FlowOracle(torch.nn.Module):
    """Returns ``(z_t - z_0) / t`` per video row (= ``eps - z_0`` on the straight path) for the
    given clean video stream ``z0``; records the group timesteps it was called with."""

    def __init__(self, z0: torch.Tensor):
        super().__init__()
        self.z0 = z0
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.calls: list[torch.Tensor] = []

    def forward(self, video, text, pooled, timesteps, meta, guidance=None, kv_cache=None):
        self.calls.append(timesteps.clone())
        t = timesteps[meta.video_group].clamp_min(1e-12)[:, None]
        return (video - self.z0) / t


def _shot_latents(config, shapes):
    gen = torch.Generator().manual_seed(5)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize(("guidance", "shift"), [(1.0, 1.0), (4.0, 3.0)])
def test_euler_lands_on_the_oracle_latents(config, prompts, guidance, shift):
    shapes = [(LATENT_CHANNELS, 2, 4, 4), (LATENT_CHANNELS, 1, 4, 6), (LATENT_CHANNELS, 2, 2, 4)]
    clean = _shot_latents(config, shapes)
    dummy = torch.zeros(config.num_dummy_tokens, config.patch_dim, dtype=torch.float64)
    stream = torch.cat([dummy] + [patchify(z, config.patch_size) for z in clean])
    oracle = FlowOracle(stream)
    t_c = 0.4
    sampler = Sampler(oracle, config, prompts.empty, mask="bidirectional", window=9,
                      settings=SamplingSettings(steps=5, guidance=guidance, t_c=t_c, shift=shift))
    p = prompts.one("a shot")
    shots = [TargetShot(p, shapes[0], seed=1), ConditionShot(p, clean[1], seed=2),
             TargetShot(p, shapes[2], seed=3)]
    out = sampler.generate(prompts.one("global"), shots)
    torch.testing.assert_close(out[0], clean[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[2], clean[2], rtol=0, atol=1e-10)
    assert out[1] is clean[1]  # the condition comes back untouched
    branches = 1 if guidance == 1.0 else 2
    assert len(oracle.calls) == 5 * branches
    first, last = oracle.calls[0], oracle.calls[-1]
    # groups: global (0), target, condition (t_c), target
    assert first.tolist() == pytest.approx([0.0, 1.0, t_c, 1.0])
    assert last[0] == 0
    assert last[2] == pytest.approx(t_c)
    assert 0 < last[1] < 1


def test_a_condition_is_noised_once_to_t_c_with_its_seed(config, prompts, model):
    sampler = Sampler(model, config, prompts.empty, mask="causal", window=9,
                      settings=SamplingSettings(steps=2, t_c=0.25))
    clean = _shot_latents(config, [(LATENT_CHANNELS, 1, 4, 4)])[0]
    shot = ConditionShot(prompts.one("x"), clean, seed=9)
    a, b = sampler.condition_group(shot), sampler.condition_group(shot)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    assert a.t == 0.25
    other = sampler.condition_group(ConditionShot(shot.prompt, clean, seed=10))
    assert not torch.allclose(a.tokens, other.tokens)


def test_shape_errors_name_the_problem(config, prompts, model):
    sampler = Sampler(model, config, prompts.empty, mask="causal", window=2,
                      settings=SamplingSettings(steps=1))
    p = prompts.one("x")
    with pytest.raises(SamplingError, match="channels"):
        sampler.generate(p, [TargetShot(p, (3, 1, 4, 4), 0)])
    with pytest.raises(SamplingError, match="not divisible by the patch"):
        sampler.generate(p, [TargetShot(p, (LATENT_CHANNELS, 1, 5, 4), 0)])
    with pytest.raises(SamplingError, match="window of 2"):
        sampler.generate(p, [TargetShot(p, (LATENT_CHANNELS, 1, 4, 4), i) for i in range(3)])


def test_settings_are_validated():
    with pytest.raises(SamplingError, match="t_c"):
        SamplingSettings(t_c=1.0)
    with pytest.raises(SamplingError, match="guidance"):
        SamplingSettings(guidance=0.5)


def test_prompt_embedding_checks_its_shapes():
    with pytest.raises(ValueError, match="tokens must be"):
        PromptEmbedding(torch.zeros(3), torch.zeros(2))


def test_a_bfloat16_model_integrates_in_float32(config, prompts):
    from tests.sample.tiny import tiny_model

    model = tiny_model(config, torch.bfloat16)
    sampler = Sampler(model, config, prompts.empty, mask="causal", window=9,
                      settings=SamplingSettings(steps=2, guidance=2.0))
    p = prompts.one("x")
    (out,) = sampler.generate(p, [TargetShot(p, (LATENT_CHANNELS, 1, 4, 4), 0)])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_packed_metadata_is_built_once_per_branch_and_call(config, prompts, monkeypatch):
    """Only timesteps and tokens change between steps: the metadata (with its memoised backend
    plans) is built once per branch, not once per step."""
    import lct_train.model.layout as layout

    calls = []
    build = layout.build_packed_meta

    def counting(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(layout, "build_packed_meta", counting)
    shape = (LATENT_CHANNELS, 1, 2, 2)
    dummy = torch.zeros(config.num_dummy_tokens, config.patch_dim, dtype=torch.float64)
    clean = torch.zeros(shape, dtype=torch.float64)
    oracle = FlowOracle(torch.cat([dummy, patchify(clean, config.patch_size)]))
    sampler = Sampler(oracle, config, prompts.empty, mask="bidirectional", window=9,
                      settings=SamplingSettings(steps=4, guidance=3.0))
    sampler.generate(prompts.one("global"), [TargetShot(prompts.one("a shot"), shape, seed=1)])
    assert len(oracle.calls) == 4 * 2
    assert len(calls) == 2


def test_a_scene_without_global_prompt_has_no_global_group(config, prompts):
    """global_prompt=None: only the shots' groups (no dummy tokens, no t=0 group), and Euler
    still lands on the oracle latents."""
    shapes = [(LATENT_CHANNELS, 2, 4, 4), (LATENT_CHANNELS, 1, 4, 6)]
    clean = _shot_latents(config, shapes)
    oracle = FlowOracle(torch.cat([patchify(z, config.patch_size) for z in clean]))
    sampler = Sampler(oracle, config, prompts.empty, mask="bidirectional", window=9,
                      settings=SamplingSettings(steps=3, guidance=1.0, t_c=0.4, shift=2.0))
    p = prompts.one("a shot")
    out = sampler.generate(None, [TargetShot(p, shapes[0], seed=1),
                                  ConditionShot(p, clean[1], seed=2)])
    torch.testing.assert_close(out[0], clean[0], rtol=0, atol=1e-10)
    assert oracle.calls[0].tolist() == pytest.approx([1.0, 0.4])  # no global group at t = 0


def test_a_shot_given_its_noise_starts_from_it(config, prompts, model):
    sampler = Sampler(model, config, prompts.empty, mask="causal", window=9,
                      settings=SamplingSettings(steps=2, guidance=1.0))
    p, shape = prompts.one("x"), (LATENT_CHANNELS, 1, 4, 4)
    seeded = shot_noise(3, shape, torch.float64).initial
    (base,) = sampler.generate(None, [TargetShot(p, shape, seed=3)])
    (same,) = sampler.generate(None, [TargetShot(p, shape, seed=99, noise=seeded)])
    (other,) = sampler.generate(None, [TargetShot(p, shape, seed=3, noise=seeded + 1.0)])
    torch.testing.assert_close(same, base, rtol=0, atol=0)  # the noise, not the seed, counts
    assert (other - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"noise of shape \[4, 1, 4, 4\]"):
        TargetShot(p, shape, seed=0, noise=torch.zeros(4, 1, 4, 4))


def test_settings_come_from_the_call_then_the_preset_then_the_defaults():
    preset = SamplingDefaults(steps=50, guidance=1.0, embedded_guidance=6.0, shift=7.0)
    got = resolve_settings({"steps": 4, "guidance": None, "shift": None}, preset)
    assert got == SamplingSettings(steps=4, guidance=1.0, embedded_guidance=6.0, shift=7.0)
    assert resolve_settings({"shift": 2.0, "guidance": 3.0}, preset).shift == 2.0
    # no preset value: today's defaults (CFG 5, 30 steps, resolution-rule shift)
    assert resolve_settings({"steps": None}, SamplingDefaults()) == SamplingSettings()
    with pytest.raises(SamplingError, match="guidance must be >= 1"):
        resolve_settings({"guidance": 0.5}, preset)



def test_the_negative_prompt_resolves_like_the_other_settings():
    """Preset < scene file / flag; ``""`` given is the empty prompt, not "unset"."""
    from lct_train.core.errors import ConfigError

    preset = SamplingDefaults(guidance=5.0, negative_prompt="blurry")
    assert resolve_settings({}, preset).negative_prompt == "blurry"
    assert resolve_settings({"negative_prompt": None}, preset).negative_prompt == "blurry"
    assert resolve_settings({"negative_prompt": ""}, preset).negative_prompt == ""
    assert resolve_settings({"negative_prompt": "dark"}, preset).negative_prompt == "dark"
    assert resolve_settings({}, SamplingDefaults()).negative_prompt is None
    with pytest.raises(ConfigError, match=r"model\.sampling\.negative_prompt.*must be a string"):
        SamplingDefaults(negative_prompt=3)


def test_setting_names_are_the_settings_fields():
    import dataclasses

    from lct_train.sample.sampler import SETTING_NAMES

    assert tuple(f.name for f in dataclasses.fields(SamplingSettings)) == SETTING_NAMES


def test_a_model_without_pooled_text_samples_prompts_with_or_without_one(wan_model, wan_config,
                                                                          wan_prompts):
    """Wan takes no pooled vector: the encoder gives none, and a pooled vector a prompt carries
    anyway (in-training validation's dataset embeddings) is not passed to the model."""
    prompt = wan_prompts.one("Character 1 runs.")
    assert prompt.pooled is None
    with_pooled = PromptEmbedding(prompt.tokens, torch.ones(16, dtype=prompt.tokens.dtype))
    settings = SamplingSettings(steps=2, guidance=2.0)
    out = []
    for p in (prompt, with_pooled):
        sampler = Sampler(wan_model, wan_config, wan_prompts.empty, mask="causal", window=9,
                          settings=settings)
        out.append(sampler.generate(p, [TargetShot(p, (LATENT_CHANNELS, 1, 4, 4), 3)])[0])
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
