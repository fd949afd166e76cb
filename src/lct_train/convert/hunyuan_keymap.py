"""Key map between diffusers' `HunyuanVideoTransformer3DModel` and the `hunyuan-video` LCT model.

torchtitan `StateDictAdapter` style: a table of parameter-name templates (`{}` = block index)
and the few tensors that change shape. The LCT model keeps diffusers' module tree and names
(design.md §2), so the table is mostly the identity; what differs is written out below:

- `x_embedder.proj.weight`: diffusers' Conv3d kernel `[D, C, pt, ph, pw]` is the LCT model's
  Linear weight `[D, C*pt*ph*pw]` (a patch vector is ordered `(c, pt, ph, pw)`, the kernel's
  flatten order), so the import flattens and the export unflattens it.
- No fused projections: both sides keep q, k, v (and the text stream's `add_*_proj`) apart.
- The final norm's `linear` emits `(scale, shift)` on both sides (diffusers'
  `AdaLayerNormContinuous` order), so its rows are copied as is, not swapped.
- Text RoPE is a config switch (`text_rope`), not a weight: nothing to map.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lct_train.convert.key_plan import KeyRule
from lct_train.core.errors import ConversionError, format_keys
from lct_train.model.config import ModelConfig

LINEAR = ("weight", "bias")
GAIN = ("weight",)  # RMSNorm gain
LAYER_NORM = ("weight", "bias")

_REFINER = "context_embedder.token_refiner.refiner_blocks.{}"
_DUAL = "transformer_blocks.{}"
_SINGLE = "single_transformer_blocks.{}"
_EMBEDDER = ("linear_1", "linear_2")

# module template -> its parameters, in diffusers' naming (the LCT model uses the same names)
MODULES: dict[str, tuple[str, ...]] = {
    "x_embedder.proj": LINEAR,
    **{f"context_embedder.time_text_embed.timestep_embedder.{m}": LINEAR for m in _EMBEDDER},
    **{f"context_embedder.time_text_embed.text_embedder.{m}": LINEAR for m in _EMBEDDER},
    "context_embedder.proj_in": LINEAR,
    f"{_REFINER}.norm1": LAYER_NORM,
    **{f"{_REFINER}.attn.{m}": LINEAR for m in ("to_q", "to_k", "to_v", "to_out.0")},
    f"{_REFINER}.norm2": LAYER_NORM,
    f"{_REFINER}.ff.net.0.proj": LINEAR,
    f"{_REFINER}.ff.net.2": LINEAR,
    f"{_REFINER}.norm_out.linear": LINEAR,
    **{f"time_text_embed.timestep_embedder.{m}": LINEAR for m in _EMBEDDER},
    **{f"time_text_embed.text_embedder.{m}": LINEAR for m in _EMBEDDER},
    **{f"time_text_embed.guidance_embedder.{m}": LINEAR for m in _EMBEDDER},
    f"{_DUAL}.norm1.linear": LINEAR,
    f"{_DUAL}.norm1_context.linear": LINEAR,
    **{f"{_DUAL}.attn.{m}": GAIN for m in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")},
    **{
        f"{_DUAL}.attn.{m}": LINEAR
        for m in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
    },
    f"{_DUAL}.attn.to_out.0": LINEAR,
    f"{_DUAL}.attn.to_add_out": LINEAR,
    **{f"{_DUAL}.{ff}.net.{i}": LINEAR for ff in ("ff", "ff_context") for i in ("0.proj", "2")},
    **{f"{_SINGLE}.attn.{m}": GAIN for m in ("norm_q", "norm_k")},
    **{f"{_SINGLE}.attn.{m}": LINEAR for m in ("to_q", "to_k", "to_v")},
    f"{_SINGLE}.norm.linear": LINEAR,
    f"{_SINGLE}.proj_mlp": LINEAR,
    f"{_SINGLE}.proj_out": LINEAR,
    "norm_out.linear": LINEAR,
    "proj_out": LINEAR,
}
# diffusers template -> LCT template, for every parameter (identity names, see the docstring)
FROM_DIFFUSERS: dict[str, str] = {
    f"{module}.{param}": f"{module}.{param}"
    for module, params in MODULES.items()
    for param in params
}
TO_DIFFUSERS: dict[str, str] = {lct: hf for hf, lct in FROM_DIFFUSERS.items()}
PATCH_EMBED_WEIGHT = "x_embedder.proj.weight"
_BLOCK_INDEX = re.compile(r"^(.*?(?:refiner_blocks|transformer_blocks))\.(\d+)\.(.*)$")


def template_of(key: str) -> tuple[str, int | None]:
    """`transformer_blocks.3.attn.to_q.weight` -> (`transformer_blocks.{}.attn.to_q.weight`, 3)."""
    match = _BLOCK_INDEX.match(key)
    if match is None:
        return key, None
    return f"{match.group(1)}.{{}}.{match.group(3)}", int(match.group(2))


def _rename(keys: Iterable[str], table: dict[str, str], source_name: str) -> dict[str, str]:
    """source key -> target key through `table`; fails listing every key the table lacks."""
    renamed, unmapped = {}, []
    for key in keys:
        template, index = template_of(key)
        if template not in table:
            unmapped.append(key)
            continue
        renamed[key] = table[template].format(index) if index is not None else table[template]
    if unmapped:
        raise ConversionError(
            format_keys(
                f"keys of {source_name} without an entry in the HunyuanVideo key map", unmapped
            )
        )
    return renamed


class HunyuanVideoStateDictAdapter:
    """Plans (lists of `KeyRule`) between the diffusers and LCT state dicts of one `ModelConfig`."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg

    def _flatten_patch_embed(self, weight):
        return weight.reshape(weight.shape[0], -1)

    def _unflatten_patch_embed(self, weight):
        return weight.reshape(weight.shape[0], self.cfg.latent_channels, *self.cfg.patch_size)

    def from_diffusers(self, diffusers_keys: Iterable[str]) -> list[KeyRule]:
        """Rules making the LCT state dict from a diffusers one with `diffusers_keys`."""
        renamed = _rename(diffusers_keys, FROM_DIFFUSERS, "the diffusers checkpoint")
        return [
            KeyRule(lct, (hf,), self._flatten_patch_embed if hf == PATCH_EMBED_WEIGHT else None)
            for hf, lct in renamed.items()
        ]

    def to_diffusers(self, lct_keys: Iterable[str]) -> list[KeyRule]:
        """Rules making the diffusers state dict from an LCT one with `lct_keys`."""
        renamed = _rename(lct_keys, TO_DIFFUSERS, "the LCT checkpoint")
        return [
            KeyRule(hf, (lct,), self._unflatten_patch_embed if hf == PATCH_EMBED_WEIGHT else None)
            for lct, hf in renamed.items()
        ]
