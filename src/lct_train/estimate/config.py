"""The ``estimate.*`` keys of ``lct-estimate`` (the other arguments are training overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lct_train.core.errors import ConfigError

PREFIX = "estimate."
# GPU memory of the ``memory=`` presets, in GB (1e9 bytes: below the cards' GiB, on purpose).
PRESET_GB = {"80gb": 80.0, "141gb": 141.0}
ATTENTION = ("flash-varlen", "reference")


@dataclass
class EstimateConfig:
    # Ranks of the (fake) job.
    world_size: int = 8
    # Joint tokens of one micro-batch (one scene: shots + global group, video + text).
    tokens: int = 0
    # Shots of the scene (equal shots; a global group is added unless with_global=false).
    shots: int = 1
    with_global: bool = True
    # Text tokens of every group.
    text_len: int = 128
    # Latent-patch frame (H, W) of a shot: 30x30 = 480x480 px with an 8x VAE and 2x2 patches.
    frame: list[int] = field(default_factory=lambda: [30, 30])
    # Explicit shot grid (F, H, W) in patches instead of ``tokens`` (then tokens follow).
    grid: list[int] = field(default_factory=list)
    # GPU memory assumed; 0 = from the ``memory=`` preset.
    gpu_gb: float = 0.0
    # Required free share of the GPU (allocator fragmentation, CUDA context, NCCL buffers).
    headroom: float = 0.10
    # Training steps measured (after AdamW's state is created, as by a first step).
    steps: int = 1
    # Attention kernel simulated: flash-varlen (flash's O(L) memory) or the dense reference
    # (only to check the estimate against a real CPU run, which cannot run flash).
    attention: str = "flash-varlen"


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """``(estimate overrides, training overrides)``."""
    ours = [a for a in args if a.startswith(PREFIX)]
    return ours, [a for a in args if not a.startswith(PREFIX)]


def parse(overrides: list[str]) -> EstimateConfig:
    cfg = parse_keys(PREFIX, EstimateConfig, overrides)
    check(cfg)
    return cfg


def parse_keys(prefix: str, schema: type, overrides: list[str]):
    """``prefix.key=value`` overrides merged onto the dataclass ``schema`` (errors name the
    full key)."""
    try:
        given = OmegaConf.from_dotlist([a[len(prefix):] for a in overrides])
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), given))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        msg = str(getattr(err, "msg", "") or err).strip().splitlines()[0]
        raise ConfigError(f"{prefix}{key}".rstrip("."), msg) from err


def check(cfg: EstimateConfig) -> None:
    def need(key: str, ok: bool, why: str) -> None:
        if not ok:
            raise ConfigError(PREFIX + key, why)

    need("world_size", cfg.world_size >= 1, f"must be >= 1, got {cfg.world_size}")
    need("shots", cfg.shots >= 1, f"must be >= 1, got {cfg.shots}")
    need("text_len", cfg.text_len >= 0, f"must be >= 0, got {cfg.text_len}")
    need("frame", len(cfg.frame) == 2 and min(cfg.frame) >= 1,
         f"must be 2 positive ints (H, W), got {cfg.frame}")
    need("grid", not cfg.grid or (len(cfg.grid) == 3 and min(cfg.grid) >= 1),
         f"must be 3 positive ints (F, H, W), got {cfg.grid}")
    need("tokens", bool(cfg.grid) != (cfg.tokens > 0),
         "give estimate.tokens=T (joint tokens of a micro-batch) or estimate.grid=[F,H,W]"
         + (", not both" if cfg.grid else ""))
    need("gpu_gb", cfg.gpu_gb >= 0, f"must be >= 0, got {cfg.gpu_gb}")
    need("headroom", 0 <= cfg.headroom < 1, f"must be in [0, 1), got {cfg.headroom}")
    need("steps", cfg.steps >= 1, f"must be >= 1, got {cfg.steps}")
    need("attention", cfg.attention in ATTENTION, f"must be one of {ATTENTION}, "
         f"got {cfg.attention!r}")


def gpu_bytes(cfg: EstimateConfig, memory_preset: str) -> int:
    if cfg.gpu_gb > 0:
        return int(cfg.gpu_gb * 1e9)
    if memory_preset in PRESET_GB:
        return int(PRESET_GB[memory_preset] * 1e9)
    raise ConfigError(PREFIX + "gpu_gb", "no GPU memory to compare with: set estimate.gpu_gb=80 "
                      f"or a memory= preset ({', '.join(PRESET_GB)})")
