"""diffusers `WanTransformer3DModel` config <-> `WanConfig`.

Only the text-to-video architecture is accepted: no image branch (`image_dim`,
`added_kv_proj_dim`, `pos_embed_seq_len`), RMS q/k norm across heads, `out_channels ==
in_channels`. Fields diffusers has no notion of (the LCT RoPE offsets, the attention backend)
come from a base config; the text length is the Wan pipelines' 512. Sampling settings: the
base's `sampling` block, else that of the Wan preset (`WAN_PRESETS`) with the same architecture
(the 1.3B's shift 3.0), else Wan's text-to-video defaults (`WAN_T2V_SAMPLING`).
"""

from __future__ import annotations

from typing import Any

from lct_train.core.errors import ConversionError
from lct_train.model.wan.config import WanConfig

DIFFUSERS_CLASS = "WanTransformer3DModel"
# Wan's official negative prompt (Wan2.1 / Wan2.2 `shared_config.sample_neg_prompt`; the presets'
# `sampling.negative_prompt` holds the same)
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰"
    "，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部"
    "，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱"
    "的背景，三条腿，背景人很多，倒着走"
)
# the official text-to-video sampling (Wan2.1 generate.py, Wan2.2 TI2V-5B config): an imported
# model keeps them unless --base-config has a sampling block or its architecture is a preset's
# (`WAN_PRESETS`; conf/model/wan*.yaml: the 480p 1.3B preset uses diffusers' 480p shift 3.0)
WAN_T2V_SAMPLING = {"steps": 50, "guidance": 5.0, "shift": 5.0,
                    "negative_prompt": WAN_NEGATIVE_PROMPT}
# conf/model presets whose `sampling` an import of the same architecture takes
WAN_PRESETS = ("wan2.1-1.3b", "wan2.1-14b", "wan2.2-ti2v-5b")
DIFFUSERS_TIMESTEP_SCALE = 1000.0
SUPPORTED_QK_NORM = "rms_norm_across_heads"
DIFFUSERS_DEFAULTS = {  # the constructor's defaults: a config.json may omit these
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": SUPPORTED_QK_NORM,
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(f"unsupported diffusers {DIFFUSERS_CLASS} config: {message}")


def config_from_diffusers(dcfg: dict[str, Any], base: WanConfig | None = None) -> WanConfig:
    """The `WanConfig` of a diffusers Wan transformer config (a `config.json` dict)."""
    class_name = dcfg.get("_class_name", DIFFUSERS_CLASS)
    if class_name != DIFFUSERS_CLASS:
        raise ConversionError(
            f"expected a diffusers {DIFFUSERS_CLASS} config, got _class_name={class_name!r}")
    d = {**DIFFUSERS_DEFAULTS, **dcfg}
    in_channels = d["in_channels"]
    out_channels = d["out_channels"] or in_channels
    _require(out_channels == in_channels,
             f"out_channels={out_channels} != in_channels={in_channels}")
    _require(d["qk_norm"] == SUPPORTED_QK_NORM, f"qk_norm={d['qk_norm']!r} (only "
             f"{SUPPORTED_QK_NORM})")
    for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
        _require(d[key] is None, f"{key}={d[key]!r} (image-to-video is not supported)")
    arch = dict(
        latent_channels=in_channels,
        patch_size=tuple(d["patch_size"]),
        num_heads=d["num_attention_heads"],
        head_dim=d["attention_head_dim"],
        num_layers=d["num_layers"],
        ffn_dim=d["ffn_dim"],
        norm_eps=float(d["eps"]),
        cross_attn_norm=bool(d["cross_attn_norm"]),
        text_dim=d["text_dim"],
        time_freq_dim=d["freq_dim"],
        timestep_scale=DIFFUSERS_TIMESTEP_SCALE,
    )
    try:
        cfg = WanConfig.from_dict({**(base or WanConfig()).to_dict(), **arch})
    except ValueError as err:
        raise ConversionError(f"diffusers config gives an invalid WanConfig: {err}") from err
    if base and base.sampling.given():
        return cfg
    return WanConfig.from_dict({**cfg.to_dict(), "sampling": preset_sampling(cfg, arch)})


def preset_sampling(cfg: WanConfig, fields) -> dict[str, Any]:
    """The `sampling` block of the first `WAN_PRESETS` preset whose architecture ``fields`` (the
    ones a diffusers config gives) equal ``cfg``'s, else `WAN_T2V_SAMPLING`."""
    from lct_train.config.store import find_conf_dir

    mine = cfg.to_dict()
    for name in WAN_PRESETS:
        file = find_conf_dir() / "model" / f"{name}.yaml"
        if not file.is_file():  # a $LCT_CONF_DIR without it
            continue
        preset = WanConfig.from_yaml(file).to_dict()
        if all(preset[k] == mine[k] for k in fields):
            return preset["sampling"]
    return WAN_T2V_SAMPLING


def config_to_diffusers(cfg: WanConfig) -> dict[str, Any]:
    """The diffusers `WanTransformer3DModel` constructor arguments of `cfg`."""
    if cfg.timestep_scale != DIFFUSERS_TIMESTEP_SCALE:
        raise ConversionError(
            f"this WanConfig has no diffusers {DIFFUSERS_CLASS} equivalent: diffusers fixes "
            f"timestep_scale={DIFFUSERS_TIMESTEP_SCALE}, the config has {cfg.timestep_scale}")
    return dict(
        patch_size=list(cfg.patch_size),
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        text_dim=cfg.text_dim,
        freq_dim=cfg.time_freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=cfg.cross_attn_norm,
        qk_norm=SUPPORTED_QK_NORM,
        eps=cfg.norm_eps,
        image_dim=None,
        added_kv_proj_dim=None,
        rope_max_seq_len=DIFFUSERS_DEFAULTS["rope_max_seq_len"],
        pos_embed_seq_len=None,
    )
