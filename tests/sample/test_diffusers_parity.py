"""lct-train samples a one-shot scene exactly as diffusers' HunyuanVideoPipeline does (same
noise, prompt embeddings and settings; fp32): the sigma grid, the x1000 timestep scaling and the
Euler update of FlowMatchEulerDiscreteScheduler, the imported model's preset settings, a scene
without global prompt being the source model's forward, and the export loaded back by diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lct_train.convert.cli import main as convert
from lct_train.core.flow import euler_step
from lct_train.model.config import ModelConfig
from lct_train.sample.schedule import sampling_timesteps
from tests.sample.hunyuan_parity import (
    LATENT,
    PROMPT,
    diffusers_one_shot,
    import_transformer,
    lct_sample_one_shot,
    relative_diff,
    tiny_transformer,
)

STEPS = 4  # the preset's 50 would only repeat the same arithmetic
PARITY = 1e-5  # fp32, relative to the largest |latent|
HUNYUAN = {"shift": 7.0, "embedded_guidance": 6.0}  # the source pipeline's settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers transformer, its lct-train import, the shared noise)."""
    root = tmp_path_factory.mktemp("hunyuan")
    model = tiny_transformer()
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(11))
    return model, import_transformer(model, root), noise


@pytest.fixture(scope="module")
def lct_latent(tiny, tmp_path_factory):
    """lct-sample's shot: only steps set, the rest from the imported model's preset."""
    _, export, noise = tiny
    return lct_sample_one_shot(export, tmp_path_factory.mktemp("lct"), noise, steps=STEPS)


def test_sigma_grid_timestep_scale_and_euler_update_match_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for steps, shift in ((4, 7.0), (50, 7.0), (30, 1.0)):
        sched = FlowMatchEulerDiscreteScheduler(shift=shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])  # as the pipeline
        ours = torch.tensor(sampling_timesteps(steps, shift))
        torch.testing.assert_close(ours.float(), sched.sigmas, rtol=0, atol=2e-7)
        scale = ModelConfig().timestep_scale  # the model embeds t * 1000: diffusers' timesteps
        torch.testing.assert_close((ours[:-1] * scale).float(), sched.timesteps, rtol=1e-6,
                                   atol=1e-4)
    gen = torch.Generator().manual_seed(0)
    sched.set_begin_index(0)
    sample, velocity = torch.randn(2, *LATENT, generator=gen)
    got = euler_step(sample, velocity, float(ours[0]), float(ours[1]))
    want = sched.step(velocity, sched.timesteps[0], sample, return_dict=False)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_imported_model_carries_the_source_sampling_settings(tiny):
    from lct_train.convert.model_spec import read_model_config

    preset = read_model_config(tiny[1]).sampling
    assert preset.given() == {"steps": 50, "guidance": 1.0, **HUNYUAN}
    hunyuan = ModelConfig.from_yaml("conf/model/hunyuan-video.yaml").sampling
    assert hunyuan == preset


def test_one_shot_equals_diffusers_pipeline(tiny, lct_latent):
    model, _, noise = tiny
    want = diffusers_one_shot(model, noise, steps=STEPS, **HUNYUAN)
    assert relative_diff(lct_latent, want) <= PARITY
    assert relative_diff(want, noise) > 0.1  # the ODE moved: the comparison is not vacuous


def test_flags_override_the_preset(tiny, tmp_path, lct_latent):
    model, export, noise = tiny
    got = lct_sample_one_shot(export, tmp_path / "s3", noise, steps=STEPS,
                              args=("--shift", "3.0", "--embedded-guidance", "4.0"))
    want = diffusers_one_shot(model, noise, steps=STEPS, shift=3.0, embedded_guidance=4.0)
    assert relative_diff(got, want) <= PARITY
    assert relative_diff(got, lct_latent) > 1e-3


def test_a_global_prompt_adds_the_global_group(tiny, tmp_path, lct_latent):
    """With a global prompt the scene is an LCT scene, not the source model's forward."""
    _, export, noise = tiny
    got = lct_sample_one_shot(export, tmp_path / "g", noise, steps=STEPS,
                              global_prompt="Character 1: a red fox.")
    assert relative_diff(got, lct_latent) > 1e-3


def test_export_loads_in_diffusers_pipeline_and_samples_the_same(tiny, tmp_path, lct_latent):
    from diffusers import HunyuanVideoTransformer3DModel

    _, export, noise = tiny
    assert convert(["export-diffusers", str(export), str(tmp_path / "transformer")]) == 0
    back = HunyuanVideoTransformer3DModel.from_pretrained(tmp_path / "transformer",
                                                          local_files_only=True).eval()
    want = diffusers_one_shot(back, noise, steps=STEPS, **HUNYUAN)
    assert relative_diff(lct_latent, want) <= PARITY


@torch.no_grad()
def test_lct_sample_from_a_pipeline_folder_equals_the_pipeline(tiny_hunyuan_pipeline, tmp_path):
    """The whole path from a diffusers folder: its transformer imported from the pipeline root,
    one shot sampled with the folder's own text encoders and VAE (``--pipeline``), against the
    pipeline itself from the prompt text (its encode_prompt, its scheduler at shift 7)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    from tests.tiny_pipelines import load_diffusers_pipeline

    root = tiny_hunyuan_pipeline
    assert convert(["import-diffusers", str(root), str(tmp_path / "lct")]) == 0
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(12))
    got = lct_sample_one_shot(tmp_path / "lct", tmp_path / "lct-sample", noise, steps=STEPS,
                              tools=("--pipeline", str(root), "--no-progress"))
    pipe = load_diffusers_pipeline(root)
    pipe.set_progress_bar_config(disable=True)
    _, frames, h, w = noise.shape
    # the template without its crop_start (95, the real tokenizer's): diffusers then counts
    # the template's tokens itself, as lct-train does, for this tiny tokenizer
    template = {"template": DEFAULT_PROMPT_TEMPLATE["template"]}
    want = pipe(prompt=PROMPT, prompt_template=template, latents=noise[None],
                num_inference_steps=STEPS,
                guidance_scale=HUNYUAN["embedded_guidance"], height=h * 8, width=w * 8,
                num_frames=(frames - 1) * 4 + 1, output_type="latent", return_dict=False)[0][0]
    assert relative_diff(got, want) <= PARITY
