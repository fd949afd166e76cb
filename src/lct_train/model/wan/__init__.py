"""The Wan family (Wan2.1 / Wan2.2 text-to-video) as an LCT model (SPEC §9)."""

from lct_train.model.wan.config import WanConfig
from lct_train.model.wan.kv_cache import WanKVCache
from lct_train.model.wan.layout import GLOBAL_GRID, WanMeta, build_wan_meta, wan_scene
from lct_train.model.wan.model import WanModel

__all__ = [
    "GLOBAL_GRID",
    "WanConfig",
    "WanKVCache",
    "WanMeta",
    "WanModel",
    "build_wan_meta",
    "wan_scene",
]
