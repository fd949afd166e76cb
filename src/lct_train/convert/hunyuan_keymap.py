"""Key map between diffusers' `HunyuanVideoTransformer3DModel` and the `hunyuan-video` LCT model.

torchtitan `StateDictAdapter` style: only what differs is tabled. The LCT model keeps diffusers'
module tree and parameter names (design.md §2), so the key set of `LCTModel(cfg)` is the key map
and `RENAMED` (diffusers name -> LCT name) is empty; what differs is one tensor's layout:

- `x_embedder.proj.weight`: diffusers' Conv3d kernel `[D, C, pt, ph, pw]` is the LCT model's
  Linear weight `[D, C*pt*ph*pw]` (a patch vector is ordered `(c, pt, ph, pw)`, the kernel's
  flatten order), so the import flattens and the export unflattens it.
- No fused projections: both sides keep q, k, v (and the text stream's `add_*_proj`) apart.
- The final norm's `linear` emits `(scale, shift)` on both sides (diffusers'
  `AdaLayerNormContinuous` order), so its rows are copied as is, not swapped.
- Text RoPE is a config switch (`text_rope`), not a weight: nothing to map.

LoRA files (`lora_to_diffusers` / `lora_from_diffusers`) go through the same table: module
names are renamed with their weights, and an adapter of the patch embedding (a Conv3d in
diffusers) takes PEFT's Conv3d LoRA shapes, A ``[r, C, pt, ph, pw]`` (a convolution with the
base kernel's size and stride) and B ``[out, r, 1, 1, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lct_train.convert.key_plan import KeyRule
from lct_train.convert.model_spec import expected_shapes
from lct_train.core.errors import ConversionError, format_keys
from lct_train.model.config import ModelConfig

RENAMED: dict[str, str] = {}  # diffusers name -> LCT name where they differ (none today)
PATCH_EMBED_WEIGHT = "x_embedder.proj.weight"  # Conv3d kernel <-> Linear weight


class HunyuanVideoStateDictAdapter:
    """Plans (lists of `KeyRule`) between the diffusers and LCT state dicts of one `ModelConfig`.

    A family whose only layout difference is the patch embedding subclasses it with its own
    `family`, `renamed` and `patch_embed_weight` (`wan_keymap.WanStateDictAdapter`)."""

    family = "HunyuanVideo"
    renamed = RENAMED
    patch_embed_weight = PATCH_EMBED_WEIGHT

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.lct_keys = frozenset(expected_shapes(cfg))  # the key map (same names both sides)

    def _flatten_patch_embed(self, weight):
        return weight.reshape(weight.shape[0], -1)

    def _unflatten_patch_embed(self, weight):
        return weight.reshape(weight.shape[0], self.cfg.latent_channels, *self.cfg.patch_size)

    def _check_mapped(self, lct_names: dict[str, str], source_name: str) -> None:
        """Fails listing every source key whose LCT name is not a key of the model."""
        unmapped = [key for key, lct in lct_names.items() if lct not in self.lct_keys]
        if unmapped:
            raise ConversionError(format_keys(
                f"keys of {source_name} without an entry in the {self.family} key map", unmapped))

    def from_diffusers(self, diffusers_keys: Iterable[str]) -> list[KeyRule]:
        """Rules making the LCT state dict from a diffusers one with `diffusers_keys`."""
        lct_names = {hf: self.renamed.get(hf, hf) for hf in diffusers_keys}
        self._check_mapped(lct_names, "the diffusers checkpoint")
        return [
            KeyRule(lct, (hf,), self._flatten_patch_embed if hf == self.patch_embed_weight else None)
            for hf, lct in lct_names.items()
        ]

    def to_diffusers(self, lct_keys: Iterable[str]) -> list[KeyRule]:
        """Rules making the diffusers state dict from an LCT one with `lct_keys`."""
        to_hf = {lct: hf for hf, lct in self.renamed.items()}
        lct_names = {lct: lct for lct in lct_keys}
        self._check_mapped(lct_names, "the LCT checkpoint")
        return [
            KeyRule(hf, (lct,), self._unflatten_patch_embed if hf == self.patch_embed_weight else None)
            for lct, hf in ((lct, to_hf.get(lct, lct)) for lct in lct_names)
        ]

    def _lora_module(self, module: str, table: dict[str, str]) -> str:
        return table.get(f"{module}.weight", f"{module}.weight").removesuffix(".weight")

    def lora_to_diffusers(self, adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bare-FQN ``<module>.lora_A.weight`` / ``lora_B.weight`` -> diffusers' module names
        and shapes (module docstring)."""
        to_hf = {lct: hf for hf, lct in self.renamed.items()}
        patch = self.patch_embed_weight.removesuffix(".weight")
        out = {}
        for key, value in adapters.items():
            module, _, kind = key.rpartition(".lora_")
            if module == patch:
                value = (self._unflatten_patch_embed(value) if kind == "A.weight"
                         else value.reshape(*value.shape, 1, 1, 1))
            out[f"{self._lora_module(module, to_hf)}.lora_{kind}"] = value
        return out

    def lora_from_diffusers(self, adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `lora_to_diffusers`."""
        patch = self.patch_embed_weight.removesuffix(".weight")
        out = {}
        for key, value in adapters.items():
            module, _, kind = key.rpartition(".lora_")
            module = self._lora_module(module, self.renamed)
            if module == patch:
                value = value.flatten(1)  # A [r, C*pt*ph*pw], B [out, r]
            out[f"{module}.lora_{kind}"] = value
        return out
