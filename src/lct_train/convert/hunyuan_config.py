"""diffusers `HunyuanVideoTransformer3DModel` config <-> the `hunyuan-video` `ModelConfig`.

Only architectures the LCT model reproduces are accepted: RMS q/k norm, no image conditioning,
`out_channels == in_channels`. Fields diffusers has no notion of (dummy grid, attention backend)
come from a base config; text RoPE is off, because the source model has none (SPEC §3).
"""

from __future__ import annotations

from typing import Any

from lct_train.core.errors import ConversionError
from lct_train.model.config import ModelConfig

DIFFUSERS_CLASS = "HunyuanVideoTransformer3DModel"
# diffusers hard-wires these; the LCT model has them as settings
DIFFUSERS_REFINER_MLP_RATIO = 4.0
DIFFUSERS_NORM_EPS = 1e-6
DIFFUSERS_TIME_FREQ_DIM = 256
DIFFUSERS_TIMESTEP_SCALE = 1000.0  # diffusers takes timesteps (and guidance) on a 0..1000 scale
SUPPORTED_QK_NORM = "rms_norm"
# HunyuanVideo's pipeline settings for its guidance-distilled checkpoint (conf/model/hunyuan-video
# .yaml's `sampling` block holds the same): an imported model keeps them
HUNYUAN_VIDEO_SAMPLING = {"steps": 50, "guidance": 1.0, "embedded_guidance": 6.0, "shift": 7.0}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(f"unsupported diffusers {DIFFUSERS_CLASS} config: {message}")


def config_from_diffusers(dcfg: dict[str, Any], base: ModelConfig | None = None) -> ModelConfig:
    """The `ModelConfig` of a diffusers HunyuanVideo transformer config (a `config.json` dict)."""
    class_name = dcfg.get("_class_name", DIFFUSERS_CLASS)
    if class_name != DIFFUSERS_CLASS:
        raise ConversionError(
            f"expected a diffusers {DIFFUSERS_CLASS} config, got _class_name={class_name!r}"
        )
    defaults = {  # diffusers' constructor defaults: a config.json may omit these
        "in_channels": 16,
        "patch_size": 2,
        "patch_size_t": 1,
        "qk_norm": SUPPORTED_QK_NORM,
        "mlp_ratio": 4.0,
        "guidance_embeds": True,
        "rope_theta": 256.0,
        "image_condition_type": None,
    }
    d = {**defaults, **dcfg}
    in_channels = d["in_channels"]
    out_channels = d.get("out_channels") or in_channels
    _require(
        out_channels == in_channels, f"out_channels={out_channels} != in_channels={in_channels}"
    )
    _require(d["qk_norm"] == SUPPORTED_QK_NORM, f"qk_norm={d['qk_norm']!r} (only rms_norm)")
    _require(
        d["image_condition_type"] is None,
        f"image_condition_type={d['image_condition_type']!r} (image-to-video is not supported)",
    )
    missing = [
        k
        for k in (
            "num_attention_heads",
            "attention_head_dim",
            "num_layers",
            "num_single_layers",
            "num_refiner_layers",
            "text_embed_dim",
            "pooled_projection_dim",
            "rope_axes_dim",
        )
        if k not in d
    ]
    _require(not missing, f"missing fields {missing}")
    arch = dict(
        latent_channels=in_channels,
        patch_size=(d["patch_size_t"], d["patch_size"], d["patch_size"]),
        num_heads=d["num_attention_heads"],
        head_dim=d["attention_head_dim"],
        num_dual_blocks=d["num_layers"],
        num_single_blocks=d["num_single_layers"],
        mlp_ratio=float(d["mlp_ratio"]),
        norm_eps=DIFFUSERS_NORM_EPS,
        text_dim=d["text_embed_dim"],
        pooled_dim=d["pooled_projection_dim"],
        num_refiner_blocks=d["num_refiner_layers"],
        refiner_mlp_ratio=DIFFUSERS_REFINER_MLP_RATIO,
        time_freq_dim=DIFFUSERS_TIME_FREQ_DIM,
        timestep_scale=DIFFUSERS_TIMESTEP_SCALE,
        guidance_embeds=bool(d["guidance_embeds"]),
        rope_axes_dim=tuple(d["rope_axes_dim"]),
        rope_theta=float(d["rope_theta"]),
        text_rope=False,
    )
    base_fields = (base or ModelConfig()).to_dict()
    if arch["guidance_embeds"] and not (base and base.sampling.given()):
        arch["sampling"] = HUNYUAN_VIDEO_SAMPLING
    try:
        return ModelConfig.from_dict({**base_fields, **arch})
    except ValueError as err:
        raise ConversionError(f"diffusers config gives an invalid ModelConfig: {err}") from err


def config_to_diffusers(cfg: ModelConfig) -> dict[str, Any]:
    """The diffusers `HunyuanVideoTransformer3DModel` constructor arguments of `cfg`."""
    pt, ph, pw = cfg.patch_size
    fixed = {
        "refiner_mlp_ratio": (cfg.refiner_mlp_ratio, DIFFUSERS_REFINER_MLP_RATIO),
        "norm_eps": (cfg.norm_eps, DIFFUSERS_NORM_EPS),
        "time_freq_dim": (cfg.time_freq_dim, DIFFUSERS_TIME_FREQ_DIM),
        "timestep_scale": (cfg.timestep_scale, DIFFUSERS_TIMESTEP_SCALE),
        "patch_size (ph == pw)": (ph, pw),
        "num_refiner_blocks (> 0)": (cfg.num_refiner_blocks > 0, True),
    }
    bad = {k: v[0] for k, v in fixed.items() if v[0] != v[1]}
    if bad:
        raise ConversionError(
            f"this ModelConfig has no diffusers {DIFFUSERS_CLASS} equivalent; diffusers fixes "
            f"{ {k: fixed[k][1] for k in bad} }, the config has {bad}"
        )
    return dict(
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        num_layers=cfg.num_dual_blocks,
        num_single_layers=cfg.num_single_blocks,
        num_refiner_layers=cfg.num_refiner_blocks,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=ph,
        patch_size_t=pt,
        qk_norm=SUPPORTED_QK_NORM,
        guidance_embeds=cfg.guidance_embeds,
        text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim,
        rope_theta=cfg.rope_theta,
        rope_axes_dim=list(cfg.rope_axes_dim),
        image_condition_type=None,
    )
