"""Which model family a text encoder / codec belongs to, checked against a model in one place.

HunyuanVideo's Llama text (4096-d) and 16-channel VAE have exactly Wan2.1's widths, so the width
checks cannot tell the families apart: each kind declares its family instead
(``TEXT_ENCODER_FAMILY``, ``CODEC_FAMILY``; ``None``: a generic kind, any family), compared with
the model config's ``family``. Used at the training start (each source's ``dataset.json``), by
``lct-sample`` (``--pipeline`` / ``--text-encoder`` / ``--codec``) and ``lct-shards build --model``.
"""

from __future__ import annotations

from lct_train.data.codecs import CODEC_FAMILY
from lct_train.data.text_encoders import TEXT_ENCODER_FAMILY


def kind_of(spec: dict | str) -> str:
    """The kind of a ``spec()`` dict (as ``dataset.json`` records it) or of a CLI string."""
    return str(spec.get("kind")) if isinstance(spec, dict) else spec.partition(":")[0]


def check_encoder_family(model_cfg, text_kind: str, codec_kind: str, *, source: str, model_name: str) -> None:
    """``ValueError`` (one line naming both sides) unless every kind that declares a family
    declares ``model_cfg.family``; ``source`` names the encoders, ``model_name`` the model."""
    families = {TEXT_ENCODER_FAMILY.get(text_kind), CODEC_FAMILY.get(codec_kind)} - {None, model_cfg.family}
    if families:
        raise ValueError(f"{source} is for the {'/'.join(sorted(families))} family (text encoder "
                         f"{text_kind}, codec {codec_kind}); {model_name} is a {model_cfg.family} model")
