"""``lct-shards build --model``: the model the shards are for, checked against the encoders
before anything is encoded (a mismatch would otherwise surface only at the training start,
after the whole encode).

The model is a preset name of ``conf/model`` (``hunyuan-video``, ``wan2.1-1.3b``, ``tiny``, ...)
or an export folder with ``config.json`` (``lct-convert import-diffusers`` writes one), of
either family (``lct_train.model.family``): a Wan model takes ``pooled_dim`` 0 (no pooled
vector), so only an encoder without one (``umt5``) fits it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lct_train.data.encoder_family import check_encoder_family, kind_of
from lct_train.model.config import ModelConfig
from lct_train.model.wan.config import WanConfig


def read_model(name_or_dir: str) -> ModelConfig | WanConfig:
    """The model config of a preset name or an export folder; ``ValueError`` naming it."""
    from lct_train.config.store import find_conf_dir
    from lct_train.convert.model_spec import read_model_config
    from lct_train.core.errors import ConversionError

    path = Path(name_or_dir)
    if path.is_dir() or path.suffix == ".json":
        try:
            return read_model_config(path)
        except ConversionError as exc:
            raise ValueError(f"--model {name_or_dir}: {exc}") from None
    presets = find_conf_dir() / "model"
    preset = presets / f"{name_or_dir}.yaml"
    if not preset.is_file():
        names = ", ".join(sorted(p.stem for p in presets.glob("*.yaml")))
        raise ValueError(f"--model {name_or_dir}: neither an export folder (config.json) nor a "
                         f"preset of {presets} ({names})")
    from lct_train.model.family import config_from_dict

    return config_from_dict(yaml.safe_load(preset.read_text()))


def check_model_fit(model: ModelConfig | WanConfig, model_name: str, codec, codec_name: str, text_encoder,
                    text_name: str, patch: int) -> None:
    """``ValueError`` (one line naming both sides) unless the codec, text encoder and build
    ``patch`` give what ``model`` takes: its family (``encoder_family``), latent channels, token and pooled widths, and latent
    sizes (multiples of ``patch``) that the model's spatial patch divides."""
    wrong = []
    try:  # HunyuanVideo's and Wan2.1's encoders have the same widths: the kinds tell them apart
        check_encoder_family(model, kind_of(text_encoder.spec()), kind_of(codec.spec()),
                             source=f"{text_name} with {codec_name}", model_name=f"--model {model_name}")
    except ValueError as exc:
        wrong.append(str(exc))
    for what, name, key in ((codec, codec_name, "latent_channels"), (text_encoder, text_name, "text_dim"),
                            (text_encoder, text_name, "pooled_dim")):
        if getattr(what, key) != getattr(model, key):
            wrong.append(f"{name} gives {key}={getattr(what, key)} but --model {model_name} takes "
                         f"{key}={getattr(model, key)}")
    _, ph, pw = model.patch_size
    if patch % ph or patch % pw:
        wrong.append(f"--patch {patch} makes latent sizes multiples of {patch}, which --model "
                     f"{model_name}'s patch_size {list(model.patch_size)} does not divide")
    if wrong:
        raise ValueError("; ".join(wrong) + " (nothing was encoded)")
