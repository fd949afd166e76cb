"""`ModelConfig`: the one dataclass that describes an LCT MMDiT (presets live in conf/model/).

Which features each preset switches on:

| preset          | dual | single | width | heads | refiner | guidance | RoPE t/h/w | text RoPE |
|-----------------|------|--------|-------|-------|---------|----------|------------|-----------|
| `tiny`          | 2    | 1      | 32    | 2     | 1       | off      | 4/6/6      | on        |
| `small`         | 4    | 2      | 128   | 4     | 1       | off      | 8/12/12    | on        |
| `lct-3b`        | 20   | 0      | 2048  | 16    | 2       | off      | 16/56/56   | on        |
| `hunyuan-video` | 20   | 40     | 3072  | 24    | 2       | on       | 16/56/56   | off       |

`hunyuan-video` is diffusers' `HunyuanVideoTransformer3DModel` layout (same module tree and
parameter names; only `x_embedder` is a Linear over patch vectors instead of a Conv3d), with text
RoPE off so that a one-shot scene reproduces the source model (SPEC §8.2). All presets are the
same architecture with features switched; nothing in the parameter set depends on the number of
shots (SPEC §8.1). The `sampling` block is no architecture: the source model's sampling
settings (`sampling_defaults.py`), carried along so exports and checkpoints keep them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lct_train.core.errors import ConfigError
from lct_train.model.sampling_defaults import SamplingDefaults

ATTN_BACKENDS = ("auto", "reference", "flex", "flash-varlen")


class PresetIO:
    """Reading a model config dataclass from a preset file or a dict (every family's)."""

    @classmethod
    def from_yaml(cls, path: str | Path):
        """Reads a preset file such as ``conf/model/tiny.yaml`` (its Hydra ``defaults`` list,
        which names the schema, is no model field)."""
        with open(path) as f:
            data = yaml.safe_load(f)
        data.pop("defaults", None)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("model", f"unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass
class ModelConfig(PresetIO):
    # latents and patches
    latent_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw)
    # transformer width and depth
    num_heads: int = 24
    head_dim: int = 128
    num_dual_blocks: int = 20
    num_single_blocks: int = 40
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    # text conditioning
    text_dim: int = 4096
    pooled_dim: int = 768
    num_refiner_blocks: int = 2  # token refiner (HunyuanVideo); 0 = a plain projection
    refiner_mlp_ratio: float = 4.0
    # timestep / guidance embedding
    time_freq_dim: int = 256  # sinusoidal channels before the timestep MLP
    timestep_scale: float = 1000.0  # timesteps in [0, 1] are embedded as t * scale
    guidance_embeds: bool = False
    # rotary position embedding (SPEC §3)
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)  # t / h / w parts of the head dim
    rope_theta: float = 256.0
    text_rope: bool = True
    # global group: number of dummy video tokens as a (F, H, W) patch grid
    dummy_grid: tuple[int, int, int] = (1, 2, 2)
    # attention kernel (one of ATTN_BACKENDS)
    attn_backend: str = "auto"
    # the source model's sampling settings (not architecture: sampling_defaults.py)
    sampling: SamplingDefaults = dataclasses.field(default_factory=SamplingDefaults)

    def __post_init__(self) -> None:
        self.patch_size = _int_triple("patch_size", self.patch_size)
        self.rope_axes_dim = _int_triple("rope_axes_dim", self.rope_axes_dim)
        self.dummy_grid = _int_triple("dummy_grid", self.dummy_grid)
        self.sampling = SamplingDefaults.from_dict(self.sampling)
        for name in (
            "latent_channels",
            "num_heads",
            "head_dim",
            "text_dim",
            "pooled_dim",
            "time_freq_dim",
        ):
            _check(
                name,
                isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                "a positive int",
                getattr(self, name),
            )
        for name in ("num_dual_blocks", "num_single_blocks", "num_refiner_blocks"):
            value = getattr(self, name)
            _check(name, isinstance(value, int) and value >= 0, "an int >= 0", value)
        _check(
            "num_dual_blocks",
            self.num_dual_blocks + self.num_single_blocks > 0,
            "> 0 when num_single_blocks is 0 (the model needs a block)",
            self.num_dual_blocks,
        )
        _check("patch_size", all(p > 0 for p in self.patch_size), "positive", self.patch_size)
        _check("dummy_grid", all(g > 0 for g in self.dummy_grid), "positive", self.dummy_grid)
        _check(
            "rope_axes_dim",
            all(d >= 0 and d % 2 == 0 for d in self.rope_axes_dim),
            "even sizes >= 0",
            self.rope_axes_dim,
        )
        _check(
            "rope_axes_dim",
            sum(self.rope_axes_dim) == self.head_dim,
            f"sizes summing to head_dim={self.head_dim}",
            self.rope_axes_dim,
        )
        _check("time_freq_dim", self.time_freq_dim % 2 == 0, "even", self.time_freq_dim)
        for name in ("mlp_ratio", "refiner_mlp_ratio", "norm_eps", "timestep_scale", "rope_theta"):
            _check(name, float(getattr(self, name)) > 0, "> 0", getattr(self, name))
        _check(
            "attn_backend",
            self.attn_backend in ATTN_BACKENDS,
            f"one of {ATTN_BACKENDS}",
            self.attn_backend,
        )

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def patch_dim(self) -> int:
        """Length of one patch vector ``(c, pt, ph, pw)``."""
        pt, ph, pw = self.patch_size
        return self.latent_channels * pt * ph * pw

    @property
    def mlp_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def num_dummy_tokens(self) -> int:
        f, h, w = self.dummy_grid
        return f * h * w

    # -- the family protocol (`lct_train.model.family`): what the shared machinery asks a config
    family = "mmdit"  # class attribute, not a field: an MMDiT config has no `family` key
    window_text_len = 0  # no cap on a shot's text (global + own prompt): joint attention
    # MFU (`lct_train.train.flops`): the narrow twin that finds each Linear's rows, ...
    flops_probe_width = dict(num_heads=1, head_dim=8, rope_axes_dim=(2, 2, 4), text_dim=8,
                             pooled_dim=8, latent_channels=1, time_freq_dim=8,
                             attn_backend="reference")

    @staticmethod
    def row_counts(meta) -> dict[str, int]:
        """... the row counts a Linear may run on in a batch of ``meta`` (by kind) ..."""
        return {"video": meta.num_video, "text": meta.num_text,
                "joint": meta.num_video + meta.num_text, "group": meta.num_groups}

    @property
    def attention_layers(self) -> dict[str, int]:
        """... and the layers that attend over each of ``meta``'s intervals (by field)."""
        return {"attn": self.num_dual_blocks + self.num_single_blocks,
                "text_attn": self.num_refiner_blocks}

    @property
    def takes_pooled(self) -> bool:
        """Whether the model takes a pooled text vector per group (``pooled [G, pooled_dim]``)."""
        return True

    def build_meta(self, specs, *, mask: str = "bidirectional", cached=None, device=None):
        """A packed batch's metadata for this model (`layout.build_packed_meta`)."""
        from lct_train.model.layout import build_packed_meta

        return build_packed_meta(specs, mask=mask, text_rope=self.text_rope, cached=cached,
                                 device=device)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("patch_size", "rope_axes_dim", "dummy_grid"):
            out[name] = list(out[name])
        return out



def _check(name: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"model.{name}", f"must be {expected}, got {value!r}")


def _int_triple(name: str, value: Any) -> tuple[int, int, int]:
    try:
        triple = tuple(int(v) for v in value)
    except TypeError as err:
        raise ConfigError(f"model.{name}", f"must be 3 ints, got {value!r}") from err
    _check(name, len(triple) == 3 and all(int(v) == v for v in value), "3 ints", value)
    return triple  # type: ignore[return-value]
