"""Key map between diffusers' `WanTransformer3DModel` and `WanModel`.

`WanModel` keeps diffusers' module tree and parameter names, so nothing is renamed; the one
layout difference is `patch_embedding.weight`: diffusers' Conv3d kernel `[D, C, pt, ph, pw]` is
a Linear weight `[D, C*pt*ph*pw]` here (flattened on import, unflattened on export). `proj_out`
keeps diffusers' row order (the model reorders its output), so it is copied as is.
"""

from __future__ import annotations

from lct_train.convert.hunyuan_keymap import HunyuanVideoStateDictAdapter

RENAMED: dict[str, str] = {}  # diffusers name -> LCT name where they differ (none)
PATCH_EMBED_WEIGHT = "patch_embedding.weight"  # Conv3d kernel <-> Linear weight


class WanStateDictAdapter(HunyuanVideoStateDictAdapter):
    family = "Wan"
    renamed = RENAMED
    patch_embed_weight = PATCH_EMBED_WEIGHT
