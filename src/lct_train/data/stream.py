"""Deterministic per-worker sample streams: shard split, seeded shuffles, source mixing, state.

A *slot* is one (dp rank, dataloader worker) pair: ``slot = rank * workers + worker`` out of
``num_slots = world_size * workers``. For source ``s`` and epoch ``e`` the shard list is shuffled
with ``seed(seed, s, e)`` (the same on every rank) and slot ``k`` takes shards ``k::num_slots``,
so ranks and workers read disjoint shards. Inside a slot, samples pass a shuffle buffer seeded
by ``(seed, s, e, slot)``. Every source stream is endless (epoch after epoch); which source gives
the next sample is drawn from a per-slot RNG by weight.

The stream is a pure function of its position, so its state is a few ints:
``{"draws": n, "sources": [[epoch, pos], ...]}``; restoring replays ``draws`` RNG calls and
skips ``pos`` refs per source at the header level (no payload read, no tensor decode).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from lct_train.data.seeding import stable_seed
from lct_train.data.tario import SampleRef, index_shard


class EmptyDatasetError(RuntimeError):
    """A source gave no usable sample in a whole epoch: stop instead of looping forever."""


@dataclass(frozen=True)
class Origin:
    """Where a sample came from: source index, epoch and position in that epoch's stream."""

    source: int
    epoch: int
    pos: int


def slot_shards(shards: list[str], seed: int, source: int, epoch: int, slot: int, num_slots: int) -> list[str]:
    """The shards one slot reads in one epoch (disjoint across slots, shuffled per epoch)."""
    order = list(shards)
    random.Random(stable_seed(seed, "shards", source, epoch)).shuffle(order)
    return order[slot::num_slots]


def shuffled(refs: Iterator[SampleRef], buffer: int, rng: random.Random) -> Iterator[SampleRef]:
    """Classic reservoir-style shuffle buffer (deterministic given ``rng``)."""
    buf: list[SampleRef] = []
    for ref in refs:
        if len(buf) < buffer:
            buf.append(ref)
            continue
        j = rng.randrange(buffer)
        yield buf[j]
        buf[j] = ref
    rng.shuffle(buf)
    yield from buf


class SlotStream:
    """The endless, resumable, mixed sample-reference stream of one slot."""

    def __init__(
        self,
        sources: list[list[str]],
        weights: list[float],
        *,
        seed: int,
        slot: int,
        num_slots: int,
        shuffle_buffer: int,
        state: dict | None = None,
    ) -> None:
        self.sources, self.seed, self.slot, self.num_slots = sources, seed, slot, num_slots
        self.shuffle_buffer = shuffle_buffer
        total = float(sum(weights))
        self._cum = list(itertools.accumulate(w / total for w in weights))
        self._mix = random.Random(stable_seed(seed, "mix", slot))
        self.draws = 0
        self.epochs = [0] * len(sources)
        self.pos = [0] * len(sources)
        if state is not None:
            self._restore(state)
        self._iters: list[Iterator[SampleRef] | None] = [None] * len(sources)

    def _restore(self, state: dict) -> None:
        if len(state["sources"]) != len(self.sources):
            raise ValueError(f"loader state has {len(state['sources'])} sources, config has {len(self.sources)}")
        for _ in range(int(state["draws"])):
            self._mix.random()
        self.draws = int(state["draws"])
        self.epochs = [int(e) for e, _ in state["sources"]]
        self.pos = [int(p) for _, p in state["sources"]]

    def state(self) -> dict:
        return {"draws": self.draws, "sources": [[e, p] for e, p in zip(self.epochs, self.pos)]}

    def _epoch_refs(self, source: int, epoch: int) -> Iterator[SampleRef]:
        shards = slot_shards(self.sources[source], self.seed, source, epoch, self.slot, self.num_slots)
        refs = itertools.chain.from_iterable(index_shard(s) for s in shards)
        rng = random.Random(stable_seed(self.seed, "samples", source, epoch, self.slot))
        return shuffled(refs, self.shuffle_buffer, rng)

    def _open(self, source: int) -> Iterator[SampleRef]:
        it = self._epoch_refs(source, self.epochs[source])
        skipped = sum(1 for _ in itertools.islice(it, self.pos[source]))
        if skipped != self.pos[source]:
            raise ValueError(
                f"loader state points past the end of source {source} epoch {self.epochs[source]} "
                f"({self.pos[source]} > {skipped} samples): the shards changed since the checkpoint"
            )
        return it

    def next_from(self, source: int) -> tuple[SampleRef, Origin]:
        """The next ref of one source, rolling over to the next epoch at the end."""
        for _ in range(2):
            if self._iters[source] is None:
                self._iters[source] = self._open(source)
            ref = next(self._iters[source], None)
            if ref is not None:
                origin = Origin(source, self.epochs[source], self.pos[source])
                self.pos[source] += 1
                return ref, origin
            if self.pos[source] == 0:
                break
            self.epochs[source] += 1
            self.pos[source] = 0
            self._iters[source] = None
        raise EmptyDatasetError(
            f"source {source} has no samples for slot {self.slot}/{self.num_slots} "
            f"(shards: {slot_shards(self.sources[source], self.seed, source, self.epochs[source], self.slot, self.num_slots)})"
        )

    def choose_source(self) -> int:
        u = self._mix.random()
        self.draws += 1
        for i, c in enumerate(self._cum):
            if u < c:
                return i
        return len(self._cum) - 1

    def next(self) -> tuple[SampleRef, Origin]:
        return self.next_from(self.choose_source())
