"""Loader configuration: plain dataclasses validated in ``__post_init__`` (Hydra group ``data``).

Every error names the offending key (``data.<key>``) so a bad YAML line is found at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lct_train.core.errors import ConfigError
from lct_train.data.schema import DEFAULT_MAX_LATENT_ABS

PACKING_POLICIES = ("cut", "skip")
RESUME_POLICIES = ("strict", "reshuffle")
DEFAULT_MAX_SHOTS = 9  # the paper's context window N (SPEC §1); also the sampler's default


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"data.{key}", msg)


def _check_prob(key: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        _fail(key, f"must be a probability in [0, 1], got {value!r}")


def _check_triple(key: str, value: Any, empty_ok: bool = False) -> tuple[int, int, int]:
    """Three positive ints; with ``empty_ok`` also (0, 0, 0) (a global group without video)."""
    triple = tuple(int(v) for v in value)
    empty = empty_ok and triple == (0, 0, 0)
    if len(triple) != 3 or (min(triple) < 1 and not empty):
        allowed = " or (0, 0, 0) for none" if empty_ok else ""
        _fail(key, f"must be three positive ints (F, H, W){allowed}, got {value!r}")
    return triple  # type: ignore[return-value]


@dataclass
class SourceConfig:
    """One dataset directory (``shards/*.tar`` + ``dataset.json``) and its mixing weight."""

    path: str = ""
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            _fail("sources[].path", "is empty; give a dataset directory written by lct-shards build")
        if not float(self.weight) > 0.0:
            _fail("sources[].weight", f"must be > 0, got {self.weight!r} (source {self.path})")
        if not self.name:
            self.name = self.path.rstrip("/").split("/")[-1] or self.path


@dataclass
class DataConfig:
    """Everything the scene loader needs; the model geometry comes from the model config.

    ``patch_size``, ``dummy_grid`` and ``window_text_len`` must equal the model's: a run never sets them, the typed
    ``TrainConfig`` copies them from its ``model`` (``lct_train.config.schema``).
    """

    sources: list[SourceConfig] = field(default_factory=list)
    max_tokens: int = 8192  # joint (text + video) tokens of one packed micro-batch
    max_shots: int = DEFAULT_MAX_SHOTS  # context window: shots kept per scene
    packing: str = "cut"  # over-budget scene: "cut" at shot boundaries, or "skip"
    packing_lookahead: int = 16  # scenes held for best-fit packing
    p_image: float = 0.0  # image substitution: a shot becomes one of its frames
    p_drop_global: float = 0.1  # prompt dropout of the global prompt (CFG)
    p_drop_shot: float = 0.1  # prompt dropout of each shot prompt, independently
    shuffle_buffer: int = 64  # sample shuffle buffer per worker and source
    num_workers: int = 2
    prefetch_factor: int = 2
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies
    timeout_s: float = 0.0  # raise if a worker gives no batch for this long (0: wait forever)
    seed: int = 0
    max_bad_fraction: float = 0.05  # a loader worker stops when more of its samples were bad
    bad_check_min_samples: int = 32  # ... judged once the worker has seen this many samples
    max_latent_abs: float = DEFAULT_MAX_LATENT_ABS  # a larger |latent| makes a sample bad; 0: off
    resume_policy: str = "strict"  # world size / workers changed: "strict" fails, "reshuffle"
    patch_size: tuple[int, int, int] = (1, 2, 2)  # model patch (pt, ph, pw)
    dummy_grid: tuple[int, int, int] = (1, 1, 1)  # model global-group dummy grid
    window_text_len: int = 0  # model cap on a shot's global + own prompt tokens (0: none)

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceConfig) else SourceConfig(**s) for s in self.sources]
        if not self.sources:
            _fail("sources", "is empty; give at least one {path, weight} dataset directory")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            _fail("sources", f"source names must be unique, got {names}")
        for key in ("max_tokens", "max_shots", "packing_lookahead", "shuffle_buffer", "prefetch_factor"):
            if int(getattr(self, key)) < 1:
                _fail(key, f"must be >= 1, got {getattr(self, key)!r}")
        if float(self.timeout_s) < 0:
            _fail("timeout_s", f"must be >= 0, got {self.timeout_s!r}")
        if int(self.num_workers) < 0:
            _fail("num_workers", f"must be >= 0, got {self.num_workers!r}")
        if self.packing not in PACKING_POLICIES:
            _fail("packing", f"must be one of {PACKING_POLICIES}, got {self.packing!r}")
        if self.resume_policy not in RESUME_POLICIES:
            _fail("resume_policy", f"must be one of {RESUME_POLICIES}, got {self.resume_policy!r}")
        for key in ("p_image", "p_drop_global", "p_drop_shot", "max_bad_fraction"):
            _check_prob(key, getattr(self, key))
        if float(self.max_latent_abs) < 0:
            _fail("max_latent_abs", f"must be >= 0 (0 disables the bound), got {self.max_latent_abs!r}")
        if int(self.bad_check_min_samples) < 1:
            _fail("bad_check_min_samples", f"must be >= 1, got {self.bad_check_min_samples!r}")
        self.patch_size = _check_triple("patch_size", self.patch_size)
        self.dummy_grid = _check_triple("dummy_grid", self.dummy_grid, empty_ok=True)
        if self.p_image > 0 and self.patch_size[0] != 1:
            _fail("p_image", f"image substitution needs a temporal patch of 1, got {self.patch_size}")
