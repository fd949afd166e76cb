"""The model families the diffusers conversions know, and the one place that picks one.

A diffusers directory names its family by `config.json`'s `_class_name`; an LCT export by its
config (`family: wan` for a `WanConfig`, none for the MMDiT's `ModelConfig`). Everything else in
`diffusers_io` and `verify` is family-independent and asks the `DiffusersFamily` it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lct_train.convert import hunyuan_config, wan_config
from lct_train.convert.hunyuan_keymap import HunyuanVideoStateDictAdapter
from lct_train.convert.reference import fixed_input, run_diffusers, run_lct
from lct_train.convert.wan_keymap import WanStateDictAdapter
from lct_train.convert.wan_reference import (
    rebuild_diffusers_rope,
    run_wan,
    run_wan_diffusers,
    wan_fixed_input,
)
from lct_train.core.errors import ConversionError
from lct_train.model.config import ModelConfig
from lct_train.model.wan.config import WanConfig


@dataclass(frozen=True)
class DiffusersFamily:
    diffusers_class: str  # config.json's `_class_name`
    config_type: type
    config_from_diffusers: Callable[..., Any]  # (diffusers config dict, base) -> config
    config_to_diffusers: Callable[[Any], dict]
    adapter: type  # (cfg) -> state-dict adapter with from_diffusers / to_diffusers
    fixed_input: Callable[[Any], Any]  # cfg -> a small single-shot input (`verify`)
    run_lct: Callable[..., Any]  # (model, cfg, input) -> [C, F, H, W]
    run_diffusers: Callable[..., Any]  # (diffusers model, input) -> [C, F, H, W]
    output_neutral: tuple[str, ...]  # fields beyond verify.OUTPUT_NEUTRAL_FIELDS that do not
    # change a one-shot output
    # (model, device): fills what a meta-built diffusers model's state dict does not hold
    finish_loading: Callable[..., None] | None = None

    def diffusers_model_class(self):
        import diffusers

        return getattr(diffusers, self.diffusers_class)


HUNYUAN_VIDEO = DiffusersFamily(
    hunyuan_config.DIFFUSERS_CLASS, ModelConfig, hunyuan_config.config_from_diffusers,
    hunyuan_config.config_to_diffusers, HunyuanVideoStateDictAdapter, fixed_input, run_lct,
    lambda model, inp: run_diffusers(model, inp, hunyuan_config.DIFFUSERS_TIMESTEP_SCALE),
    (),
)
WAN = DiffusersFamily(
    wan_config.DIFFUSERS_CLASS, WanConfig, wan_config.config_from_diffusers,
    wan_config.config_to_diffusers, WanStateDictAdapter, wan_fixed_input, run_wan,
    run_wan_diffusers, ("shot_gap", "rope_offsets"), rebuild_diffusers_rope,
)
FAMILIES = (HUNYUAN_VIDEO, WAN)


def family_of_class(class_name: Any, where: object) -> DiffusersFamily:
    """The family of a diffusers `_class_name` read from `where` (named in the error)."""
    for family in FAMILIES:
        if class_name == family.diffusers_class:
            return family
    supported = ", ".join(f.diffusers_class for f in FAMILIES)
    raise ConversionError(f"{where}: _class_name is {class_name!r}; supported diffusers models: "
                          f"{supported}")


def family_of_config(cfg: Any) -> DiffusersFamily:
    for family in FAMILIES:
        if isinstance(cfg, family.config_type):
            return family
    raise ConversionError(f"no diffusers family for a {type(cfg).__name__}")
