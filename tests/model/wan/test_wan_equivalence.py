"""SPEC §8.2 / §9 on Wan: a one-shot scene without the global prompt is diffusers'
`WanTransformer3DModel` fed the zero-padded prompt; with the isolated mask, a packed multi-shot
scene (per-shot timesteps, RoPE offsets, global + own windows) is independent diffusers runs."""

import pytest
import torch

from lct_train.model.geometry import patchify, unpatchify
from lct_train.model.wan import wan_scene
from tests.model.wan.wan_testutils import meta_for, run, tiny_wan_config, wan_pair

RTOL = 1e-5  # fp32, relative to the largest output value (SPEC §8.2 for this family)


@pytest.fixture(scope="module")
def pair():
    return wan_pair()


def _diffusers(source, latent, prompt, t, text_len):
    padded = torch.cat([prompt, prompt.new_zeros(text_len - len(prompt), prompt.shape[1])])
    with torch.no_grad():
        return source(latent[None], torch.tensor([t * 1000.0]), padded[None],
                      return_dict=False)[0][0]


def _assert_rel_close(got, want):
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel <= RTOL, rel


@pytest.mark.parametrize(("frames_hw", "text_len", "t"), [
    ((2, 4, 4), 9, 0.37),  # square grid
    ((3, 4, 6), 1, 0.999),  # non-square grids, one token, t near 1
    ((1, 6, 2), 24, 0.0),  # a full window (no padding), t = 0
    ((2, 2, 8), 17, 0.6),
])
def test_one_shot_scene_equals_diffusers(pair, frames_hw, text_len, t):
    source, model = pair
    cfg = model.cfg
    gen = torch.Generator().manual_seed(text_len)
    latent = torch.randn(cfg.latent_channels, *frames_hw, generator=gen)
    prompt = torch.randn(text_len, cfg.text_dim, generator=gen)
    grid = (frames_hw[0], frames_hw[1] // 2, frames_hw[2] // 2)
    meta = meta_for(cfg, [wan_scene([(text_len, grid)])])
    with torch.no_grad():
        out = run(model, meta, patchify(latent, cfg.patch_size), prompt, torch.tensor([t]))
    got = unpatchify(out, grid, cfg.patch_size, cfg.latent_channels)
    _assert_rel_close(got, _diffusers(source, latent, prompt, t, cfg.text_len))


def test_padding_matters(pair):
    """The test can fail: without Wan's zero padding (a window of the valid tokens only) the
    output differs from diffusers'."""
    source, model = pair
    cfg = model.cfg
    latent, prompt = torch.randn(cfg.latent_channels, 2, 4, 4), torch.randn(5, cfg.text_dim)
    meta = meta_for(cfg, [wan_scene([(5, (2, 2, 2))])])
    with torch.no_grad():
        full = source(latent[None], torch.tensor([370.0]), prompt[None], return_dict=False)[0][0]
        out = run(model, meta, patchify(latent, cfg.patch_size), prompt, torch.tensor([0.37]))
    got = unpatchify(out, (2, 2, 2), cfg.patch_size, cfg.latent_channels)
    assert float((got - full).abs().max() / full.abs().max()) > 1e-2


@pytest.mark.parametrize("rope_offsets", ["temporal", "diagonal"])
def test_isolated_shots_equal_independent_diffusers_runs(rope_offsets):
    """Two packed scenes (one with a global prompt), isolated mask: each shot = diffusers on its
    own latent, its own t, and its window (global + own prompt) as the prompt."""
    cfg = tiny_wan_config(rope_offsets=rope_offsets)
    source, model = wan_pair(cfg)
    shots = [  # (scene, prompt length, latent (F, H, W), t)
        (0, 4, (2, 4, 4), 0.8), (0, 6, (1, 2, 6), 0.15), (1, 3, (3, 4, 2), 0.5),
    ]
    specs = [wan_scene([(n, (f, h // 2, w // 2)) for s, n, (f, h, w), _ in shots if s == 0],
                       global_text=5),
             wan_scene([(n, (f, h // 2, w // 2)) for s, n, (f, h, w), _ in shots if s == 1])]
    meta = meta_for(cfg, specs, mask="isolated")
    gen = torch.Generator().manual_seed(0)
    latents = [torch.randn(cfg.latent_channels, *fhw, generator=gen) for _, _, fhw, _ in shots]
    glob = torch.randn(5, cfg.text_dim, generator=gen)
    prompts = [torch.randn(n, cfg.text_dim, generator=gen) for _, n, _, _ in shots]
    text = torch.cat([glob, prompts[0], prompts[1], prompts[2]])
    timesteps = torch.tensor([0.0, shots[0][3], shots[1][3], shots[2][3]])
    video = torch.cat([patchify(x, cfg.patch_size) for x in latents])
    with torch.no_grad():
        out = run(model, meta, video, text, timesteps)
    for k, (scene, _, fhw, t) in enumerate(shots):
        grid = (fhw[0], fhw[1] // 2, fhw[2] // 2)
        rows = out[meta.shot_video_cu[k]:meta.shot_video_cu[k + 1]]
        got = unpatchify(rows, grid, cfg.patch_size, cfg.latent_channels)
        window = torch.cat([glob, prompts[k]]) if scene == 0 else prompts[k]
        _assert_rel_close(got, _diffusers(source, latents[k], window, t, cfg.text_len))
