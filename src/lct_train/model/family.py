"""The model families and the one switch between them: a model config's ``family`` key.

``family: wan`` is a `WanConfig` (`lct_train.model.wan`), no key (or ``mmdit``) the MMDiT's
`ModelConfig`. A family's model declares what the shared machinery needs: ``block_lists()``
(FSDP units, AC, compile), ``num_attention_layers`` / ``new_kv_cache()``, and its scratch
initialisation (`lct_train.model.init`, with ``init_rules`` for what is family-specific).
Its config declares the rest: ``build_meta``, ``takes_pooled`` / ``pooled_dim``,
``guidance_embeds``, ``dummy_grid`` / ``num_dummy_tokens``, ``window_text_len`` (a shot's
global + own prompt cap, 0: none), and for the MFU count ``flops_probe_width``,
``row_counts(meta)`` and ``attention_layers`` (`lct_train.train.flops`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lct_train.model.config import ModelConfig
from lct_train.model.wan.config import FAMILY as WAN
from lct_train.model.wan.config import WanConfig

MMDIT = "mmdit"
CONFIGS = {MMDIT: ModelConfig, WAN: WanConfig}  # family -> its model config dataclass
FAMILIES = tuple(CONFIGS)


def config_from_dict(data: dict[str, Any]) -> ModelConfig | WanConfig:
    """The config of ``data``'s family (``ConfigError`` naming ``model.family`` otherwise)."""
    data = {k: v for k, v in data.items() if k != "defaults"}  # a preset file's Hydra list
    family = data.get("family", MMDIT)
    if family not in CONFIGS:
        from lct_train.core.errors import ConfigError

        raise ConfigError("model.family", f"must be one of {FAMILIES}, got {family!r}")
    if family == MMDIT:  # the MMDiT's config has no family key (the default family)
        data = {k: v for k, v in data.items() if k != "family"}
    return CONFIGS[family].from_dict(data)


def build_model(cfg: ModelConfig | WanConfig, device: str | torch.device = "cpu") -> nn.Module:
    """The bare model of ``cfg``'s family on ``device`` (``meta``: no memory)."""
    from lct_train.model.mmdit import LCTModel
    from lct_train.model.wan.model import WanModel

    with torch.device(device):
        return WanModel(cfg) if isinstance(cfg, WanConfig) else LCTModel(cfg)
