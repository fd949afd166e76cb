"""ModelConfig validation and JSON round trip."""

import json

import pytest

from lct_train.core.errors import ConfigError
from lct_train.model.config import ModelConfig


def test_round_trip_through_json():
    cfg = ModelConfig(num_heads=2, head_dim=16, rope_axes_dim=(4, 6, 6), text_rope=False)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.rope_axes_dim == (4, 6, 6)
    assert again.hidden_size == 32


def test_derived_sizes():
    cfg = ModelConfig(latent_channels=4, patch_size=(1, 2, 2), dummy_grid=(1, 2, 3))
    assert cfg.patch_dim == 16
    assert cfg.num_dummy_tokens == 6
    assert cfg.mlp_dim == 4 * 3072


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rope_axes_dim": (16, 56, 54)}, "rope_axes_dim"),
        ({"rope_axes_dim": (15, 57, 56)}, "rope_axes_dim"),
        ({"attn_backend": "xformers"}, "attn_backend"),
        ({"num_heads": 0}, "num_heads"),
        ({"patch_size": (1, 2)}, "patch_size"),
        ({"num_single_blocks": -1}, "num_single_blocks"),
        ({"timestep_scale": 0.0}, "timestep_scale"),
    ],
)
def test_validation_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"^model\.{field}: "):
        ModelConfig(**overrides)


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match=r"^model: unknown field"):
        ModelConfig.from_dict({"hidden": 3})
