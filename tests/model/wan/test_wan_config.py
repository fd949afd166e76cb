"""`WanConfig` checks (errors name the key), the `model.family` switch, and one Wan block under
torch.compile(fullgraph=True) (what `parallelize`'s regional compile runs)."""

import pytest
import torch

from lct_train.core.errors import ConfigError
from lct_train.model.attention import get_backend
from lct_train.model.config import ModelConfig
from lct_train.model.family import build_model, config_from_dict
from lct_train.model.rope import rope_cos_sin
from lct_train.model.wan import WanConfig, WanModel, wan_scene
from lct_train.model.wan.blocks import WanBlockContext
from tests.model.wan.wan_testutils import meta_for, tiny_wan_config
from tests.testutils import PRESETS


@pytest.mark.parametrize(("overrides", "key"), [
    ({"family": "mmdit"}, "model.family"),
    ({"head_dim": 7}, "model.head_dim"),
    ({"rope_offsets": "spiral"}, "model.rope_offsets"),
    ({"shot_gap": -1}, "model.shot_gap"),
    ({"text_len": 0}, "model.text_len"),
    ({"attn_backend": "sage"}, "model.attn_backend"),
    ({"patch_size": [1, 2]}, "model.patch_size"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        WanConfig(**overrides)
    assert info.value.key == key


def test_family_switch_and_rope_split():
    wan = config_from_dict(WanConfig.from_yaml(PRESETS / "wan2.1-1.3b.yaml").to_dict())
    assert isinstance(wan, WanConfig)
    assert wan.rope_axes_dim == (44, 42, 42)  # diffusers' WanRotaryPosEmbed split of 128
    assert isinstance(build_model(wan, "meta"), WanModel)
    assert isinstance(config_from_dict({"family": "mmdit", "num_heads": 2, "head_dim": 16,
                                        "rope_axes_dim": [4, 6, 6]}), ModelConfig)
    with pytest.raises(ConfigError, match="model: unknown field"):
        config_from_dict({"family": "wan", "num_dual_blocks": 2})
    with pytest.raises(ConfigError, match=r"model\.family"):
        config_from_dict({"family": "flux"})


def test_compile_one_block_without_graph_break():
    torch._dynamo.reset()
    cfg = tiny_wan_config(attn_backend="reference")
    block = WanModel(cfg).blocks[0]
    meta = meta_for(cfg, [wan_scene([(2, (1, 2, 2)), (3, (1, 1, 2))], global_text=2)],
                    mask="causal")
    rotate = torch.ones(meta.num_video, dtype=torch.bool)
    cos, sin = rope_cos_sin(meta.rope_coords, rotate, cfg.rope_axes_dim, cfg.rope_theta)
    ctx = WanBlockContext(meta, cos, sin, get_backend("reference", torch.device("cpu"), True))
    dim = cfg.hidden_size
    x, text = torch.randn(meta.num_video, dim), torch.randn(meta.num_text + 1, dim)
    time_proj = torch.randn(meta.num_groups, 6, dim)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, time_proj, text, ctx), block(x, time_proj, text, ctx))
