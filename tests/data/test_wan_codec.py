"""The Wan VAE codec (issue 20): ``AutoencoderKLWan`` latents normalised per channel as diffusers'
Wan pipelines do, for Wan2.1's 16-channel 4x8x8 layout and Wan2.2 TI2V-5B's 48-channel 4x16x16
one (tiny random weights from config), fp32 on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from lct_train.data.codecs import TINY_WAN_CONFIGS, TINY_WAN_SEED, WanCodec, build_codec
from lct_train.data.pipeline_dir import load_pipeline

FRAMES = 5  # 1 + 4: two latent frames


def reference_vae(variant: str):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(TINY_WAN_SEED)
    return AutoencoderKLWan(**TINY_WAN_CONFIGS[variant]).eval()


def stats(vae, dtype=torch.float32):
    """diffusers' per-channel mean and 1 / std as its Wan pipelines build them."""
    c = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1, 1).to(dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, c, 1, 1, 1).to(dtype)
    return mean, inv_std


def pipeline_decode(vae, latents):
    """WanPipeline.__call__'s decode path (output_type != "latent"), before postprocessing."""
    latents = latents.to(vae.dtype)
    mean, inv_std = stats(vae, latents.dtype)
    return vae.decode(latents / inv_std + mean, return_dict=False)[0]


def shots(sf: int, n: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, FRAMES, 3, 2 * sf, 3 * sf, generator=gen) * 2 - 1  # [B, T, 3, H, W]


@pytest.mark.parametrize(("variant", "kind", "channels", "sf"), [("2.1", "tiny-wan", 16, 8),
                                                                   ("2.2", "tiny-wan2.2", 48, 16)])
def test_latents_equal_diffusers_encode_normalised_and_decode_equals_the_pipelines(variant, kind, channels, sf):
    codec = build_codec(kind)
    assert isinstance(codec, WanCodec)
    assert (codec.latent_channels, codec.temporal_factor, codec.spatial_factor) == (channels, 4, sf)
    assert codec.spec() == {"kind": "wan", "path": None, "tiling": False, "variant": variant}
    assert build_codec(json.loads(json.dumps(codec.spec()))).spec() == codec.spec()
    x = shots(sf)
    latents = codec.encode_batch(x)
    vae = reference_vae(variant)
    mean, inv_std = stats(vae)
    with torch.no_grad():
        z = vae.encode(x.permute(0, 2, 1, 3, 4)).latent_dist.mode()
        ref = (z - mean) * inv_std  # WanImageToVideoPipeline.prepare_latents' normalisation
        for i, lat in enumerate(latents):
            assert lat.shape == (channels, 2, 2, 3)
            assert (lat - ref[i]).abs().max() <= 1e-6
        assert codec.valid_frames(FRAMES + 2) == FRAMES
        assert codec.pixel_frames(2) == FRAMES
        frames = codec.decode(latents[0])
        assert frames.shape == (FRAMES, 3, 2 * sf, 3 * sf)
        assert torch.equal(frames, pipeline_decode(vae, latents[0][None])[0].permute(1, 0, 2, 3))
    # one shot alone: the batch's row
    assert (codec.encode(x[1]) - latents[1]).abs().max() <= 1e-6


def test_normalisation_uses_the_vaes_own_statistics():
    codec = build_codec("tiny-wan")
    z = torch.randn(1, 16, 2, 2, 3)
    mean, inv_std = stats(codec.vae)
    assert torch.allclose(codec.normalize(z), (z - mean) * inv_std)
    assert torch.allclose(codec.denormalize(codec.normalize(z)), z, atol=1e-6)
    assert not torch.allclose(codec.normalize(z), z)  # the tiny statistics are not the identity


def test_pipeline_vae_is_tiled_and_fp32_unless_vae_dtype(tiny_wan_pipeline, tiny_wan22_pipeline):
    for root, channels in ((tiny_wan_pipeline, 16), (tiny_wan22_pipeline, 48)):
        _, codec = load_pipeline(root, text_encoder=False)
        assert codec.spec() == {"kind": "wan", "path": str(root / "vae"), "tiling": True}
        assert codec.vae.use_tiling
        assert codec.latent_channels == channels
        assert build_codec(f"wan:{root / 'vae'}").spec() == codec.spec()
    _, full = load_pipeline(tiny_wan_pipeline, text_encoder=False, dtype=torch.bfloat16)
    assert {p.dtype for p in full.vae.parameters()} == {torch.float32}  # Wan's VAE: fp32 over --dtype
    _, half = load_pipeline(tiny_wan_pipeline, text_encoder=False, dtype=torch.bfloat16,
                            vae_dtype=torch.bfloat16)
    assert next(half.vae.parameters()).dtype == torch.bfloat16
    x = shots(8, 1)[0]
    ref = build_codec(f"wan:{tiny_wan_pipeline / 'vae'}").encode(x)
    got = half.encode(x)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()
