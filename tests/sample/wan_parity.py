"""One shot of a tiny random Wan sampled two ways from the same noise, prompt and negative-prompt
embeddings: by ``lct-sample scene`` (a scene file without a global prompt, the shot's noise from
a file, the imported model's settings) and by diffusers' ``WanPipeline`` (``latents=noise,
output_type="latent"``, ``prompt_embeds`` / ``negative_prompt_embeds`` zero-padded to the
model's 512 text tokens as the pipeline pads them, no tokenizer, text encoder or VAE). Test
harness of tests/sample/test_wan_parity.py; shares the scene-file runner of hunyuan_parity.py.

Sigma grid: WanPipeline calls ``scheduler.set_timesteps(num_inference_steps)``, whose grid in
``FlowMatchEulerDiscreteScheduler`` is not Wan's own. ``OfficialGridScheduler`` gives the pipeline
the official Wan grid (``get_sampling_sigmas``: ``linspace(1, 0, N + 1)[:-1]`` shifted, then 0),
the one lct-train samples on (docs/method.md, "Sampling a Wan model").
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from lct_train.data.text_encoders import TinyTextEncoder
from lct_train.model.wan import WanConfig
from tests.model.wan.wan_testutils import diffusers_wan, tiny_wan_config

TEXT_LEN = 512  # an imported Wan's text_len (the pipelines' max_sequence_length)
LATENT = (16, 2, 4, 6)  # [C, F, h, w] of hunyuan_parity.SIZE by the tiny-wan codec (4x, 8x)
# a Wan model takes a Wan codec (data.encoder_family): the 16-channel tiny-wan one
TOOLS = ("--codec", "tiny-wan", "--text-encoder", "tiny", "--no-progress")


def tiny_transformer(seed: int = 0):
    """A tiny random diffusers `WanTransformer3DModel` taking the `tiny` encoder's 32-d text and
    the tiny-wan codec's 16 latent channels (hunyuan_parity.SIZE -> LATENT)."""
    return diffusers_wan(tiny_wan_config(text_dim=TinyTextEncoder().text_dim, latent_channels=LATENT[0]), seed)


def padded_embeds(prompt: str, text_len: int = TEXT_LEN) -> torch.Tensor:
    """``[1, text_len, D]``: the `tiny` encoder's valid tokens of ``prompt``, then zero rows, as
    WanPipeline's ``_get_t5_prompt_embeds`` trims and pads umT5's states."""
    valid = TinyTextEncoder().encode([prompt]).valid(0).float()
    return torch.cat([valid, valid.new_zeros(text_len - valid.shape[0], valid.shape[1])])[None]


def official_grid(steps: int, shift: float) -> np.ndarray:
    """Wan's ``get_sampling_sigmas`` (Wan2.1 wan/utils/fm_solvers.py), without the final 0."""
    sigma = np.linspace(1.0, 0.0, steps + 1)[:steps]
    return shift * sigma / (1 + (shift - 1) * sigma)


def scheduler(shift: float, official: bool = True):
    """diffusers' flow-match Euler scheduler at ``shift``; ``official``: on Wan's grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class OfficialGridScheduler(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
            # the unshifted linspace: the scheduler applies its own shift
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
            super().set_timesteps(sigmas=sigmas, device=device)

    cls = OfficialGridScheduler if official else FlowMatchEulerDiscreteScheduler
    return cls(shift=shift)


@torch.no_grad()
def diffusers_one_shot(transformer, noise: torch.Tensor, *, prompt: str, negative_prompt: str,
                       steps: int, guidance: float, shift: float) -> torch.Tensor:
    """``WanPipeline(..., latents=noise, output_type="latent")``: the shot's latent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=scheduler(shift),
                       transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    _, frames, h, w = noise.shape
    out = pipe(prompt_embeds=padded_embeds(prompt), negative_prompt_embeds=padded_embeds(
        negative_prompt), latents=noise[None], num_inference_steps=steps, guidance_scale=guidance,
        height=h * 8, width=w * 8, num_frames=(frames - 1) * 4 + 1, output_type="latent",
        max_sequence_length=TEXT_LEN, return_dict=False)[0]
    return out[0]


def imported_config(export) -> WanConfig:
    from lct_train.convert.model_spec import read_model_config

    return read_model_config(export)
