"""Tiny random parts for the sampling tests: model configs/models of both families (the MMDiT
and Wan, over the same pixel-codec latents and `tiny` text encoder), shared constants."""

from __future__ import annotations

from pathlib import Path

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.mmdit import LCTModel
from lct_train.model.wan import WanConfig, WanModel
from tests import testutils

PIXEL_FACTOR = 2
LATENT_CHANNELS = 3 * PIXEL_FACTOR**2  # the pixel codec's channels
MODEL_SEED = 1234


def tiny_config() -> ModelConfig:
    """The tiny preset over the pixel codec's latents, on the reference attention."""
    return testutils.tiny_config(latent_channels=LATENT_CHANNELS, attn_backend="reference")


def tiny_model(config: ModelConfig, dtype: torch.dtype = torch.float64) -> LCTModel:
    torch.manual_seed(MODEL_SEED)
    return LCTModel(config).to(dtype).eval()


def tiny_wan_config() -> WanConfig:
    """A tiny Wan over the same latents and text width as ``tiny_config``; windows of up to 128
    text tokens (the global prompt plus a shot's, `tiny` encoder bytes)."""
    cfg = tiny_config()
    return WanConfig(latent_channels=LATENT_CHANNELS, num_heads=2, head_dim=12, num_layers=2,
                     ffn_dim=32, text_dim=cfg.text_dim, text_len=128, attn_backend="reference")


def tiny_wan_model(config: WanConfig, dtype: torch.dtype = torch.float64) -> WanModel:
    torch.manual_seed(MODEL_SEED)
    return WanModel(config).to(dtype).eval()


def write_consolidated(folder, config, model):
    """``model.safetensors`` + ``config.json`` as ``lct-convert`` exports them."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder / "model.safetensors"
