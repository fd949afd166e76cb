"""The per-worker pipeline: refs -> bytes -> validated scene -> augmented -> packed batches.

Runs inside each DataLoader worker (or in the main process with ``num_workers=0``). Every
batch goes out with the worker's state *after* that batch: its stream position, the refs of
the scenes still waiting in the packing window, and its counters. The main process keeps the
state of the batches it actually consumed, which makes resume exact under prefetching.
Bad samples are skipped, counted and reported (shard + key); too many of them, or a whole
epoch without a usable scene, raise instead of looping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from lct_train.data.augment import Augmenter, Scene, text_cut_message
from lct_train.data.config import DataConfig
from lct_train.data.packing import BestFitPacker, collate
from lct_train.data.schema import BadSampleError, DatasetInfo, decode_scene
from lct_train.data.stream import EmptyDatasetError, Origin, SlotStream
from lct_train.data.tario import MemberReader, SampleRef

logger = logging.getLogger(__name__)
# text_cut: scenes whose prompts were cut to the model's text window (augment.window_cut)
COUNTERS = ("seen", "bad", "skipped_over_budget", "truncated", "text_cut", "batches", "tokens")


class DataQualityError(RuntimeError):
    """More bad samples than ``max_bad_fraction`` allows."""


@dataclass
class Item:
    """A scene in the packing window and the ref that reproduces it on resume."""

    scene: Scene
    ref: SampleRef
    origin: Origin

    @property
    def tokens(self) -> int:
        return self.scene.tokens

    @property
    def key(self) -> str:
        return self.scene.key


@dataclass
class WorkerPlan:
    """What the main process hands to the workers (pickled once per iterator)."""

    cfg: DataConfig
    info: DatasetInfo
    empty: tuple[torch.Tensor, torch.Tensor]
    shards: list[list[str]]  # per source, sorted
    seed: int
    dp_rank: int
    num_workers: int  # logical workers per rank (>= 1)
    num_slots: int
    rotation: int  # DataLoader worker w runs logical worker (w + rotation) % num_workers
    start_states: list[dict | None]


class SceneStream(IterableDataset):
    """An endless iterable of ``(PackedScenes, worker_state, logical_worker, new_bad)``."""

    def __init__(self, plan: WorkerPlan):
        super().__init__()
        self.plan = plan

    def __iter__(self):
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        plan = self.plan
        logical = ((info.id if info else 0) + plan.rotation) % plan.num_workers
        yield from _WorkerRun(plan, logical).batches()


class _WorkerRun:
    def __init__(self, plan: WorkerPlan, logical: int):
        self.plan, self.logical, self.cfg = plan, logical, plan.cfg
        state = plan.start_states[logical] or {}
        self.stream = SlotStream(
            plan.shards, [s.weight for s in self.cfg.sources], seed=plan.seed,
            slot=plan.dp_rank * plan.num_workers + logical, num_slots=plan.num_slots,
            shuffle_buffer=self.cfg.shuffle_buffer, state=state.get("stream"),
        )
        self.counters = dict.fromkeys(COUNTERS, 0) | state.get("counters", {})
        self.augment = Augmenter(self.cfg, plan.info, *plan.empty)
        self.reader = MemberReader()
        self.packer = BestFitPacker(self.cfg.max_tokens, self.cfg.packing_lookahead)
        self.new_bad: list[tuple[str, str, str]] = []
        self.warned_text_cut: set[str] = set()
        self.epoch_good: dict[int, list[int]] = {}  # source -> [epoch, usable scenes so far]
        for ref, origin in state.get("pending", []):
            item = self._load(_ref_from_json(ref), Origin(*origin), count=False)
            if item is not None:
                self.packer.window.append(item)

    def _bad(self, shard: str, key: str, reason: str) -> None:
        self.counters["bad"] += 1
        self.new_bad.append((shard, key, reason))
        logger.warning("skipping bad sample shard=%s key=%s: %s", shard, key, reason)
        seen, bad = self.counters["seen"], self.counters["bad"]
        if seen >= self.cfg.bad_check_min_samples and bad > self.cfg.max_bad_fraction * seen:
            raise DataQualityError(
                f"{bad} of {seen} samples were bad (> max_bad_fraction={self.cfg.max_bad_fraction}); "
                f"last: shard={shard} key={key}: {reason}"
            )

    def _load(self, ref: SampleRef, origin: Origin, count: bool = True) -> Item | None:
        if count:
            self.counters["seen"] += 1
        if ref.error:
            self._bad(ref.shard, ref.key, ref.error)
            return None
        source = self.cfg.sources[origin.source].name
        try:
            rec = decode_scene(self.reader.read(ref), ref.shard, ref.key, self.plan.info,
                               self.cfg.max_latent_abs)
            scene = self.augment(rec, source, origin.epoch)
        except BadSampleError as exc:
            self._bad(exc.shard, exc.key, exc.reason)
            return None
        except OSError as exc:
            self._bad(ref.shard, ref.key, f"read failed: {exc}")
            return None
        fitted = self.augment.fit_budget(scene)
        if fitted is None:
            self.counters["skipped_over_budget"] += count
            return None
        self.counters["truncated"] += int(fitted.truncated and count)
        if fitted.text_cut and count:
            self.counters["text_cut"] += 1
            if source not in self.warned_text_cut:  # once per source (and worker)
                self.warned_text_cut.add(source)
                logger.warning("source %s: %s", source, text_cut_message(
                    fitted.key, fitted.text, fitted.text_cut, self.cfg.window_text_len))
        return Item(fitted, ref, origin)

    def _track_epoch(self, origin: Origin, usable: bool) -> None:
        epoch, good = self.epoch_good.get(origin.source, (None, 0))
        if epoch is not None and origin.epoch != epoch and good == 0:
            name = self.cfg.sources[origin.source].name
            raise EmptyDatasetError(
                f"source {name!r}: a whole epoch ({epoch}) of slot {self.stream.slot} gave no usable "
                f"scene (all bad or over max_tokens={self.cfg.max_tokens}); see the warnings above"
            )
        if epoch is None and origin.pos != 0:
            return  # started mid-epoch (resume): judge from the next full epoch on
        if origin.epoch != epoch:
            good = 0
        self.epoch_good[origin.source] = [origin.epoch, good + int(usable)]

    def _fill(self) -> None:
        while not self.packer.full:
            ref, origin = self.stream.next()
            item = self._load(ref, origin)
            self._track_epoch(origin, item is not None)
            if item is not None:
                self.packer.add(item)

    def state(self) -> dict:
        pending = [[_ref_to_json(i.ref), [i.origin.source, i.origin.epoch, i.origin.pos]]
                   for i in self.packer.window]
        return {"stream": self.stream.state(), "pending": pending, "counters": dict(self.counters)}

    def batches(self):
        cfg = self.cfg
        while True:
            self._fill()
            items = self.packer.take()
            packed = collate([i.scene for i in items], cfg.patch_size, cfg.max_tokens)
            self.counters["batches"] += 1
            self.counters["tokens"] += int(packed.stats["tokens"])
            new_bad, self.new_bad = self.new_bad, []
            yield packed, self.state(), self.logical, new_bad


def _ref_to_json(ref: SampleRef) -> list:
    return [ref.shard, ref.key, [list(m) for m in ref.members], ref.error]


def _ref_from_json(data: list) -> SampleRef:
    shard, key, members, error = data
    return SampleRef(shard, key, tuple((str(e), int(o), int(s)) for e, o, s in members), error)
