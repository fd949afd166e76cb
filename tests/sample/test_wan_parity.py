"""lct-train samples a one-shot Wan scene exactly as diffusers' WanPipeline does (same noise,
prompt and negative-prompt embeddings, settings; fp32): true CFG with a negative prompt, the
official Wan sigma grid, the x1000 timestep scaling and the Euler update, an imported model's
Wan sampling settings (official negative prompt), a scene without global prompt being the source
model's forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lct_train.convert.wan_config import WAN_NEGATIVE_PROMPT, WAN_T2V_SAMPLING
from lct_train.model.wan import WanConfig
from lct_train.sample.schedule import sampling_timesteps
from tests.sample.hunyuan_parity import (
    PROMPT,
    import_transformer,
    lct_sample_one_shot,
    relative_diff,
)
from tests.sample.wan_parity import (
    LATENT,
    TOOLS,
    diffusers_one_shot,
    imported_config,
    official_grid,
    scheduler,
    tiny_transformer,
)

STEPS = 4  # the preset's 50 would only repeat the same arithmetic
PARITY = 1e-5  # fp32, relative to the largest |latent|
WAN = {"guidance": 5.0, "shift": 5.0}  # an imported Wan's settings (WAN_T2V_SAMPLING)
WAN_PRESETS = ("wan2.1-1.3b", "wan2.1-14b", "wan2.2-ti2v-5b")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers transformer, its lct-train import, the shared noise)."""
    root = tmp_path_factory.mktemp("wan")
    model = tiny_transformer()
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(11))
    return model, import_transformer(model, root), noise


@pytest.fixture(scope="module")
def lct_latent(tiny, tmp_path_factory):
    """lct-sample's shot: only steps set, the rest (negative prompt too) from the import."""
    _, export, noise = tiny
    return lct_sample_one_shot(export, tmp_path_factory.mktemp("lct"), noise, steps=STEPS, tools=TOOLS)


def test_lct_train_samples_on_the_official_wan_grid_not_the_scheduler_default():
    """lct-train's grid is Wan's ``get_sampling_sigmas``; diffusers' flow-match scheduler as
    WanPipeline calls it (``set_timesteps(N)``) puts its steps elsewhere."""
    for steps, shift in ((4, 5.0), (50, 3.0)):
        ours = torch.tensor(sampling_timesteps(steps, shift), dtype=torch.float64)
        torch.testing.assert_close(ours[:-1], torch.from_numpy(official_grid(steps, shift)),
                                   rtol=0, atol=1e-12)
        assert float(ours[-1]) == 0.0
        sched = scheduler(shift)
        sched.set_timesteps(steps)
        torch.testing.assert_close(ours.float(), sched.sigmas, rtol=0, atol=2e-7)
        default = scheduler(shift, official=False)
        default.set_timesteps(steps)
        assert (default.sigmas - ours.float()).abs().max() > 1e-3


def test_imported_wan_carries_wan_sampling_and_the_presets_agree(tiny):
    assert imported_config(tiny[1]).sampling.given() == {"steps": 50, **WAN,
                                                         "negative_prompt": WAN_NEGATIVE_PROMPT}
    assert WAN_T2V_SAMPLING["negative_prompt"] == WAN_NEGATIVE_PROMPT
    shifts = {}
    for name in WAN_PRESETS:
        preset = WanConfig.from_yaml(f"conf/model/{name}.yaml").sampling
        assert (preset.steps, preset.guidance, preset.negative_prompt) == (
            50, 5.0, WAN_NEGATIVE_PROMPT)
        shifts[name] = preset.shift
    assert shifts == {"wan2.1-1.3b": 3.0, "wan2.1-14b": 5.0, "wan2.2-ti2v-5b": 5.0}


def test_one_shot_equals_wan_pipeline_with_the_official_negative_prompt(tiny, lct_latent):
    model, _, noise = tiny
    want = diffusers_one_shot(model, noise, prompt=PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT,
                              steps=STEPS, **WAN)
    assert relative_diff(lct_latent, want) <= PARITY
    assert relative_diff(want, noise) > 0.1  # the ODE moved: the comparison is not vacuous


def test_negative_prompt_and_settings_from_flags_and_scene_file(tiny, tmp_path, lct_latent):
    model, export, noise = tiny
    got = lct_sample_one_shot(export, tmp_path / "flags", noise, steps=STEPS, tools=TOOLS,
                              args=("--shift", "3.0", "--guidance", "4.0",
                                    "--negative-prompt", "blurry, static"))
    want = diffusers_one_shot(model, noise, prompt=PROMPT, negative_prompt="blurry, static",
                              steps=STEPS, guidance=4.0, shift=3.0)
    assert relative_diff(got, want) <= PARITY
    assert relative_diff(got, lct_latent) > 1e-3
    # negative_prompt "" in the scene file: the empty prompt (diffusers' default)
    got = lct_sample_one_shot(export, tmp_path / "scene", noise, steps=STEPS, tools=TOOLS, negative_prompt="")
    want = diffusers_one_shot(model, noise, prompt=PROMPT, negative_prompt="", steps=STEPS, **WAN)
    assert relative_diff(got, want) <= PARITY
    assert relative_diff(got, lct_latent) > 1e-3


def test_a_global_prompt_joins_the_cross_attention_window(tiny, tmp_path, lct_latent):
    """With a global prompt the scene is an LCT scene (text-only global group), not the source
    model's forward."""
    _, export, noise = tiny
    got = lct_sample_one_shot(export, tmp_path / "g", noise, steps=STEPS, tools=TOOLS,
                              global_prompt="Character 1: a red fox.")
    assert relative_diff(got, lct_latent) > 1e-3
    assert np.isfinite(got.numpy()).all()
