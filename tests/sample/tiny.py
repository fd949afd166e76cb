"""Tiny random parts for the sampling tests: model config/model, shared constants."""

from __future__ import annotations

from pathlib import Path

import torch

from lct_train.model.config import ModelConfig
from lct_train.model.mmdit import LCTModel
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


def write_consolidated(folder, config: ModelConfig, model: LCTModel):
    """``model.safetensors`` + ``config.json`` as ``lct-convert`` exports them."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder / "model.safetensors"
