"""`WanConfig`: the dataclass of a Wan-family LCT model (presets `conf/model/wan*.yaml`).

The fields are those of diffusers' `WanTransformer3DModel` (text-to-video: no image branch),
under this project's names, plus the LCT settings of SPEC §9 (`shot_gap`, `rope_offsets`) and the
attention backend. `family: wan` tells the presets apart from the MMDiT's `ModelConfig`.

| preset           | layers | width | heads | ffn   | channels | params (= diffusers) |
|------------------|--------|-------|-------|-------|----------|----------------------|
| `wan2.1-1.3b`    | 30     | 1536  | 12    | 8960  | 16       | 1,418,996,800        |
| `wan2.1-14b`     | 40     | 5120  | 40    | 13824 | 16       | 14,288,491,584       |
| `wan2.2-ti2v-5b` | 30     | 3072  | 24    | 14336 | 48       | 4,999,787,712        |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lct_train.model.config import ATTN_BACKENDS, PresetIO, _check, _int_triple
from lct_train.model.sampling_defaults import SamplingDefaults

FAMILY = "wan"
ROPE_OFFSETS = ("temporal", "diagonal")  # SPEC §9: per-shot temporal offset, or §3's diagonal


@dataclass
class WanConfig(PresetIO):
    family: str = FAMILY
    # latents and patches (in_channels == out_channels)
    latent_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw)
    # transformer
    num_heads: int = 12
    head_dim: int = 128
    num_layers: int = 30
    ffn_dim: int = 8960
    norm_eps: float = 1e-6
    cross_attn_norm: bool = True  # affine LayerNorm before cross-attention (all Wan models)
    # text: umT5 states, each prompt zero-padded to text_len tokens (the source model's rule)
    text_dim: int = 4096
    text_len: int = 512
    # timestep embedding
    time_freq_dim: int = 256
    timestep_scale: float = 1000.0  # timesteps in [0, 1] are embedded as t * scale
    # RoPE on video only; the head dim splits t/h/w as Wan does (`rope_axes_dim`)
    rope_theta: float = 10000.0
    rope_offsets: str = "temporal"
    shot_gap: int = 4  # latent frames between consecutive shots (temporal offsets)
    # attention kernel (one of ATTN_BACKENDS)
    attn_backend: str = "auto"
    # the source model's sampling settings (not architecture: sampling_defaults.py)
    sampling: SamplingDefaults = dataclasses.field(default_factory=SamplingDefaults)

    def __post_init__(self) -> None:
        _check("family", self.family == FAMILY, f"{FAMILY!r} for a WanConfig", self.family)
        self.sampling = SamplingDefaults.from_dict(self.sampling)
        self.patch_size = _int_triple("patch_size", self.patch_size)
        for name in ("latent_channels", "num_heads", "head_dim", "num_layers", "ffn_dim",
                     "text_dim", "text_len", "time_freq_dim"):
            value = getattr(self, name)
            _check(name, isinstance(value, int) and value > 0, "a positive int", value)
        _check("patch_size", all(p > 0 for p in self.patch_size), "positive", self.patch_size)
        _check("head_dim", self.head_dim % 2 == 0 and self.head_dim >= 6,
               "even and >= 6 (three RoPE axes)", self.head_dim)
        _check("time_freq_dim", self.time_freq_dim % 2 == 0, "even", self.time_freq_dim)
        _check("shot_gap", isinstance(self.shot_gap, int) and self.shot_gap >= 0, "an int >= 0",
               self.shot_gap)
        _check("cross_attn_norm", isinstance(self.cross_attn_norm, bool), "a bool",
               self.cross_attn_norm)
        for name in ("norm_eps", "timestep_scale", "rope_theta"):
            _check(name, float(getattr(self, name)) > 0, "> 0", getattr(self, name))
        _check("rope_offsets", self.rope_offsets in ROPE_OFFSETS, f"one of {ROPE_OFFSETS}",
               self.rope_offsets)
        _check("attn_backend", self.attn_backend in ATTN_BACKENDS, f"one of {ATTN_BACKENDS}",
               self.attn_backend)

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def patch_dim(self) -> int:
        """Length of one patch vector ``(c, pt, ph, pw)``."""
        pt, ph, pw = self.patch_size
        return self.latent_channels * pt * ph * pw

    @property
    def rope_axes_dim(self) -> tuple[int, int, int]:
        """t / h / w parts of the head dim, as diffusers' `WanRotaryPosEmbed` (44/42/42 for 128)."""
        h = w = 2 * (self.head_dim // 6)
        return (self.head_dim - h - w, h, w)

    # -- the family protocol (`lct_train.model.family`): what the shared machinery asks a config
    pooled_dim = 0  # Wan takes no pooled text vector ...
    guidance_embeds = False  # ... and no guidance embedding
    takes_pooled = False

    @property
    def dummy_grid(self) -> tuple[int, int, int]:
        """The global group's video grid: none (text only, `layout.GLOBAL_GRID`)."""
        from lct_train.model.wan.layout import GLOBAL_GRID

        return GLOBAL_GRID

    num_dummy_tokens = 0

    @property
    def window_text_len(self) -> int:
        """The most text tokens a shot's prompts (global + own) may have: its cross-attention
        window (`layout.build_wan_meta`); 0 on a family without such a cap."""
        return self.text_len

    # MFU (`lct_train.train.flops`): the narrow twin, the row kinds, the attention layers
    flops_probe_width = dict(num_heads=1, head_dim=6, text_dim=8, text_len=8, ffn_dim=8,
                             latent_channels=1, time_freq_dim=8, attn_backend="reference")

    @staticmethod
    def row_counts(meta) -> dict[str, int]:
        """Text Linears run on the text rows and the windows' zero row (`WanModel.forward`)."""
        return {"video": meta.num_video, "text": meta.num_text + 1, "group": meta.num_groups}

    @property
    def attention_layers(self) -> dict[str, int]:
        """Video self-attention and cross-attention into the text windows, in every block."""
        return {"attn": self.num_layers, "cross_attn": self.num_layers}

    def build_meta(self, specs, *, mask: str = "bidirectional", cached=None, device=None):
        """A packed batch's metadata for this model (`wan.layout.build_wan_meta`)."""
        from lct_train.model.wan.layout import build_wan_meta

        return build_wan_meta(specs, text_len=self.text_len, mask=mask, shot_gap=self.shot_gap,
                              rope_offsets=self.rope_offsets, cached=cached, device=device)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = list(out["patch_size"])
        return out
