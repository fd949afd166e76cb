"""Long-context MMDiT: layers, interleaved 3D RoPE, packed-batch metadata, attention backends."""

from lct_train.model.attention import KVCache
from lct_train.model.config import ModelConfig
from lct_train.model.geometry import patch_grid, patchify, scene_spec, unpatchify
from lct_train.model.layout import GroupSpec, PackedMeta, SceneSpec, build_packed_meta
from lct_train.model.mmdit import LCTModel

__all__ = [
    "GroupSpec",
    "KVCache",
    "LCTModel",
    "ModelConfig",
    "PackedMeta",
    "SceneSpec",
    "build_packed_meta",
    "patch_grid",
    "patchify",
    "scene_spec",
    "unpatchify",
]
