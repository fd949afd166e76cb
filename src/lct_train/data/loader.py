"""The scene loader: endless packed micro-batches for one data-parallel rank, resumable exactly.

Usage::

    loader = SceneLoader(cfg, dp_rank=rank, dp_world_size=world)
    for step, batch in zip(range(steps), loader):   # endless; the step count ends training
        ...
    ckpt["dataloader"] = loader.state_dict()        # DCP-friendly (ints + JSON strings)

Splitting: rank ``r`` and DataLoader worker ``w`` form slot ``r * workers + w``; each slot reads
its own shards (see ``stream.py``), so a source needs at least ``world_size * workers`` shards;
fewer is refused at construction instead of leaving some slot without data.

**State** (``state_dict()``): ``{"world_size": W, "num_workers": K, "dp_rank_<r>": json}`` where
the JSON holds ``batches`` consumed, ``seed_salt`` and, per logical worker, its stream position,
the refs of the scenes waiting in its packing window, and its counters. The DataLoader visits
workers round-robin; a resumed loader rotates worker ids so the worker due next comes first.
A resumed run therefore yields exactly the batches an uninterrupted run would have yielded.

**World-size change policy.** The state is only exact for the same ``world_size`` and
``num_workers``. With ``resume_policy="strict"`` (default) ``load_state_dict`` raises
:class:`LoaderStateMismatchError`; then either restore the old topology, set
``data.resume_policy=reshuffle`` (every rank starts a fresh, deterministic split whose seed is
salted with the number of consumed batches, so data order differs from the first epoch but is
reproducible), or exclude ``dataloader`` from the checkpoint load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lct_train.core.errors import ConfigError
from lct_train.data.config import DataConfig
from lct_train.data.schema import (
    GEOMETRY_KEYS,
    SHARD_SUFFIX,
    SHARDS_DIR,
    DatasetInfo,
    load_empty_prompt,
)
from lct_train.data.seeding import stable_seed
from lct_train.data.worker import COUNTERS, SceneStream, WorkerPlan

logger = logging.getLogger(__name__)


class LoaderStateMismatchError(RuntimeError):
    """The checkpointed loader state was written for another world size or worker count."""


class SourceError(ConfigError):
    """A data source cannot be used (missing directory, no shards, too few): a config error of
    ``data.sources[<i>].path``."""

    def __init__(self, index: int, message: str):
        super().__init__(f"data.sources[{index}].path", message)


def list_shards(root: str | Path) -> list[str]:
    shard_dir = Path(root) / SHARDS_DIR
    return sorted(str(p) for p in shard_dir.glob(f"*{SHARD_SUFFIX}"))


def _identity(x):
    return x


class SceneLoader:
    """Stateful iterable of :class:`PackedScenes` for one data-parallel rank."""

    def __init__(self, cfg: DataConfig, *, dp_rank: int = 0, dp_world_size: int = 1):
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank={dp_rank} outside dp_world_size={dp_world_size}")
        self.cfg, self.dp_rank, self.dp_world_size = cfg, dp_rank, dp_world_size
        self.num_workers = max(1, cfg.num_workers)
        self.infos = [_read_info(i, s.path) for i, s in enumerate(cfg.sources)]
        self._check_sources()
        self.shards = [list_shards(s.path) for s in cfg.sources]
        slots = dp_world_size * self.num_workers
        for i, (src, shards) in enumerate(zip(cfg.sources, self.shards)):
            if not shards:
                raise SourceError(i, f"{src.path} holds no shards ({SHARDS_DIR}/*{SHARD_SUFFIX}): "
                                  "write them with lct-shards build")
            if len(shards) < slots:
                raise SourceError(
                    i, f"data source {src.name!r} ({src.path}) has {len(shards)} shards but "
                    f"{dp_world_size} ranks x {self.num_workers} workers = {slots} readers need one "
                    f"each: write more, smaller shards (lct-shards build --scenes-per-shard) or "
                    f"lower data.num_workers"
                )
        self.empty = load_empty_prompt(cfg.sources[0].path)
        self.batches = 0
        self.seed_salt = 0
        self.worker_states: list[dict | None] = [None] * self.num_workers

    def _check_sources(self) -> None:
        first = self.infos[0]
        for src, info in zip(self.cfg.sources[1:], self.infos[1:]):
            for key in GEOMETRY_KEYS:
                if getattr(info, key) != getattr(first, key):
                    raise ValueError(
                        f"data source {src.name!r}: {key}={getattr(info, key)} differs from "
                        f"{self.cfg.sources[0].name!r} ({getattr(first, key)}); sources must share encoders"
                    )

    @property
    def seed(self) -> int:
        return self.cfg.seed if self.seed_salt == 0 else stable_seed(self.cfg.seed, "salt", self.seed_salt)

    def _plan(self) -> WorkerPlan:
        return WorkerPlan(
            cfg=self.cfg, info=self.infos[0], empty=self.empty, shards=self.shards, seed=self.seed,
            dp_rank=self.dp_rank, num_workers=self.num_workers,
            num_slots=self.dp_world_size * self.num_workers,
            rotation=self.batches % self.num_workers, start_states=list(self.worker_states),
        )

    def __iter__(self):
        plan = self._plan()
        dataset = SceneStream(plan)
        if self.cfg.num_workers == 0:
            source = iter(dataset)
        else:
            source = iter(DataLoader(
                dataset, batch_size=None, num_workers=self.cfg.num_workers, collate_fn=_identity,
                prefetch_factor=self.cfg.prefetch_factor, persistent_workers=False,
                pin_memory=self.cfg.pin_memory and torch.cuda.is_available(), timeout=self.cfg.timeout_s,
            ))
        expected = plan.rotation
        for packed, state, logical, new_bad in source:
            if logical != expected:
                raise RuntimeError(f"loader worker order broke: got worker {logical}, expected {expected}")
            expected = (expected + 1) % self.num_workers
            self.worker_states[logical] = state
            self.batches += 1
            for shard, key, reason in new_bad:
                logger.warning("skipped bad sample shard=%s key=%s: %s", shard, key, reason)
            packed.stats.update(self.counters())
            yield packed

    def counters(self) -> dict[str, float]:
        """Totals over this rank's workers (cumulative since the start of training)."""
        total = dict.fromkeys(COUNTERS, 0.0)
        for state in self.worker_states:
            for k, v in (state or {}).get("counters", {}).items():
                total[k] += v
        total["packing_efficiency_mean"] = (
            total["tokens"] / (total["batches"] * self.cfg.max_tokens) if total["batches"] else 0.0
        )
        return {f"loader/{k}": v for k, v in total.items()}

    def state_dict(self) -> dict:
        rank_state = {"batches": self.batches, "seed_salt": self.seed_salt, "workers": self.worker_states}
        return {
            "world_size": self.dp_world_size,
            "num_workers": self.num_workers,
            f"dp_rank_{self.dp_rank}": json.dumps(rank_state),
        }

    def load_state_dict(self, state: dict) -> None:
        key = f"dp_rank_{self.dp_rank}"
        same = (int(state.get("world_size", -1)) == self.dp_world_size
                and int(state.get("num_workers", -1)) == self.num_workers and key in state)
        if same:
            rank_state = json.loads(state[key])
            self.batches = int(rank_state["batches"])
            self.seed_salt = int(rank_state["seed_salt"])
            self.worker_states = list(rank_state["workers"])
            return
        msg = (f"loader state was saved with world_size={state.get('world_size')} "
               f"num_workers={state.get('num_workers')}, now {self.dp_world_size} x {self.num_workers}")
        if self.cfg.resume_policy == "strict":
            raise LoaderStateMismatchError(
                f"{msg}: cannot resume exactly. Set data.resume_policy=reshuffle for a fresh "
                f"deterministic split, or skip loading the 'dataloader' checkpoint key"
            )
        batches = _any_batches(state)
        logger.warning("%s: resume_policy=reshuffle, new split salted with %d", msg, batches)
        self.batches, self.seed_salt = 0, max(1, batches)
        self.worker_states = [None] * self.num_workers


def _read_info(index: int, path: str) -> DatasetInfo:
    if not Path(path).is_dir():
        raise SourceError(index, f"{path} is not a directory")
    try:
        return DatasetInfo.read(path)
    except (OSError, ValueError, TypeError) as exc:
        raise SourceError(index, str(exc)) from exc


def _any_batches(state: dict) -> int:
    """Consumed batches (equal on every rank: one batch per step) from any rank's entry."""
    for key, value in sorted(state.items()):
        if key.startswith("dp_rank_") and isinstance(value, str):
            return int(json.loads(value)["batches"])
    return 0
