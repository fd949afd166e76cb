"""Writes the shards of one build chunk atomically: parts go to ``*.tar.tmp`` and are renamed to
their final names only when the whole chunk is done, so a final name is never half-written."""

from __future__ import annotations

import os
from pathlib import Path

import webdataset as wds

from lct_train.data.schema import SHARD_SUFFIX

TMP_SUFFIX = ".tmp"
SHARD_MTIME = 1_700_000_000.0  # fixed member mtime: rebuilding gives byte-identical shards
PART_FORMAT = "{chunk:06d}-{part:03d}" + SHARD_SUFFIX


class ChunkWriter:
    """Tar parts of one chunk, rolled over at ``max_bytes``; ``commit()`` publishes them."""

    def __init__(self, shard_dir: str | Path, chunk: int, max_bytes: int):
        self.dir, self.chunk, self.max_bytes = Path(shard_dir), chunk, max_bytes
        self.parts: list[Path] = []
        self._writer: wds.TarWriter | None = None
        self._file = None
        self._bytes = 0
        self.samples = 0

    def _roll(self) -> None:
        self._close_part()
        final = self.dir / PART_FORMAT.format(chunk=self.chunk, part=len(self.parts))
        self.parts.append(final)
        self._file = open(str(final) + TMP_SUFFIX, "wb")  # noqa: SIM115
        self._writer = wds.TarWriter(self._file, mtime=SHARD_MTIME)
        self._bytes = 0

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._writer = self._file = None

    def write(self, sample: dict) -> None:
        size = sum(len(v) for k, v in sample.items() if not k.startswith("__"))
        if self._writer is None or (self._bytes and self._bytes + size > self.max_bytes):
            self._roll()
        self._writer.write(sample)
        self._bytes += size
        self.samples += 1

    def commit(self) -> list[str]:
        """Closes the last part and renames every part to its final name."""
        self._close_part()
        for final in self.parts:
            os.replace(str(final) + TMP_SUFFIX, final)
        return [p.name for p in self.parts]


def remove_chunk(shard_dir: str | Path, chunk: int) -> None:
    """Deletes every part (final or temporary) of an unfinished chunk."""
    for p in Path(shard_dir).glob(f"{chunk:06d}-*"):
        p.unlink()
