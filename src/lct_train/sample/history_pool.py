"""The history pool (paper §3.4): accepted shots (clean latents + how they were made) that later
shots may condition on, by index, plus at most one pending shot awaiting acceptance.

On disk a pool is a directory::

    pool.json            {"version", "global_prompt" (null: no global group), "settings",
                          "shots": [...], "pending"}
    shot_000.safetensors  {"latent": [C, F, H, W]}  (one per accepted shot)
    pending.safetensors   the pending shot, if any

``settings`` is free-form (checkpoint, codec, sampling settings) so that later calls of the
interactive CLI default to what the pool was started with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from lct_train.core.files import write_atomic
from lct_train.sample.writers import write_latents

POOL_FILE = "pool.json"
PENDING_FILE = "pending.safetensors"
POOL_VERSION = 1
LATENT_KEY = "latent"


def default_context(num_history: int, window: int) -> tuple[int, ...]:
    """The default auto-regressive context: the latest ``window - 1`` earlier shots (the new
    shot takes the window's last slot)."""
    return tuple(range(max(0, num_history - (window - 1)), num_history))


class PoolError(ValueError):
    """A history-pool request that cannot be served (bad index, nothing pending, ...)."""


@dataclass(frozen=True)
class PoolShot:
    """One shot of the pool: its clean latent and its provenance."""

    latent: torch.Tensor  # [C, F, H, W]
    prompt: str  # as fed to the text encoder (with the "[SHOT CUT] " marker for a cut)
    seed: int
    mode: str  # "given" for a condition shot, else the mode that generated it
    context: tuple[int, ...] = ()  # pool indices the shot was generated from
    source: str | None = None  # condition media file of a given shot

    def meta(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt, "seed": self.seed, "mode": self.mode,
            "context": list(self.context), "source": self.source,
            "shape": list(self.latent.shape),
        }


@dataclass
class HistoryPool:
    """Accepted shots in order (their index is the pool index) and an optional pending shot."""

    global_prompt: str | None = None  # None: the scene has no global group
    shots: list[PoolShot] = field(default_factory=list)
    pending: PoolShot | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.shots)

    def add(self, shot: PoolShot) -> int:
        """Accepts ``shot`` directly; returns its pool index."""
        self.check_context(shot.context, limit=len(self.shots))
        self.shots.append(shot)
        return len(self.shots) - 1

    def propose(self, shot: PoolShot) -> None:
        """Makes ``shot`` the pending shot (replacing any earlier proposal)."""
        self.check_context(shot.context, limit=len(self.shots))
        self.pending = shot

    def accept(self) -> int:
        """Moves the pending shot into the pool; returns its index."""
        if self.pending is None:
            raise PoolError("no pending shot to accept (generate one with `lct-sample shot`)")
        index = self.add(self.pending)
        self.pending = None
        return index

    def check_context(self, context: tuple[int, ...], limit: int | None = None) -> None:
        limit = len(self.shots) if limit is None else limit
        bad = [i for i in context if not 0 <= i < limit]
        if bad:
            raise PoolError(f"context {list(context)}: indices {bad} are not in the pool "
                            f"(accepted shots: 0..{limit - 1})")
        if len(set(context)) != len(context):
            raise PoolError(f"context {list(context)} repeats a shot")

    def default_context(self, window: int) -> tuple[int, ...]:
        """``default_context`` over the accepted shots."""
        return default_context(len(self.shots), window)

    # ---- disk ----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, shot in enumerate(self.shots):
            path = directory / _shot_file(i)
            if not path.exists():  # accepted shots never change
                write_latents(path, {LATENT_KEY: shot.latent})
        pending_path = directory / PENDING_FILE
        if self.pending is not None:
            write_latents(pending_path, {LATENT_KEY: self.pending.latent})
        elif pending_path.exists():
            pending_path.unlink()
        doc = {
            "version": POOL_VERSION,
            "global_prompt": self.global_prompt,
            "settings": self.settings,
            "shots": [dict(s.meta(), file=_shot_file(i)) for i, s in enumerate(self.shots)],
            "pending": None if self.pending is None else self.pending.meta(),
        }
        write_atomic(directory / POOL_FILE, json.dumps(doc, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> HistoryPool:
        directory = Path(directory)
        path = directory / POOL_FILE
        if not path.is_file():
            raise PoolError(f"{directory} is not a history pool (no {POOL_FILE})")
        doc = json.loads(path.read_text())
        if doc.get("version") != POOL_VERSION:
            raise PoolError(f"{path}: version {doc.get('version')!r}, expected {POOL_VERSION}")
        shots = [_read_shot(directory / m["file"], m) for m in doc["shots"]]
        pending = doc.get("pending")
        return cls(
            global_prompt=doc.get("global_prompt"),
            shots=shots,
            pending=None if pending is None else _read_shot(directory / PENDING_FILE, pending),
            settings=doc.get("settings", {}),
        )

    @staticmethod
    def exists(directory: str | os.PathLike) -> bool:
        return (Path(directory) / POOL_FILE).is_file()


def _shot_file(index: int) -> str:
    return f"shot_{index:03d}.safetensors"


def _read_shot(path: Path, meta: dict[str, Any]) -> PoolShot:
    if not path.is_file():
        raise PoolError(f"history pool file {path} is missing")
    latent = load_file(str(path))[LATENT_KEY]
    if list(latent.shape) != list(meta["shape"]):
        raise PoolError(f"{path}: latent shape {list(latent.shape)} != recorded {meta['shape']}")
    return PoolShot(latent=latent, prompt=meta["prompt"], seed=int(meta["seed"]),
                    mode=meta["mode"], context=tuple(meta.get("context", ())),
                    source=meta.get("source"))
