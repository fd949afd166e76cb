"""Tar shards at the member level: index samples without reading payloads, read one by offset.

Indexing reads only the 512-byte headers (``tarfile`` seeks over data), so skipping samples on
resume costs no payload I/O and no tensor decoding. A truncated shard yields the samples that
are complete and one :class:`SampleRef` whose ``error`` says where the shard broke.
Sample keys follow webdataset: the member path up to the first dot of its basename.
"""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from typing import NamedTuple

OPEN_FILES_CACHED = 4


class SampleRef(NamedTuple):
    """Where one sample's members lie in its shard (plain data: goes into the loader state)."""

    shard: str
    key: str
    members: tuple[tuple[str, int, int], ...]  # (extension, data offset, size)
    error: str = ""


def split_name(name: str) -> tuple[str, str]:
    """``dir/abc.latents.safetensors`` -> (``dir/abc``, ``latents.safetensors``)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, ""
    return (f"{head}/{stem}" if head else stem), ext


def index_shard(path: str) -> list[SampleRef]:
    """All samples of a shard in file order; a broken shard ends with an ``error`` ref."""
    refs: list[SampleRef] = []
    size = os.path.getsize(path)
    key, members = None, []

    def flush() -> None:
        if key is not None:
            refs.append(SampleRef(path, key, tuple(members)))

    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                info = tar.next()
                if info is None:
                    break
                if not info.isfile():
                    continue
                k, ext = split_name(info.name)
                if info.offset_data + info.size > size:
                    if k != key:  # the truncated member starts a new sample: the last is whole
                        flush()
                    key, members = None, []  # one bad ref per truncated sample, not two
                    refs.append(SampleRef(path, k, (), f"member {info.name} truncated"))
                    return refs
                if k != key:
                    flush()
                    key, members = k, []
                members.append((ext, info.offset_data, info.size))
    except (tarfile.TarError, EOFError, OSError) as exc:
        flush()
        last = key if key is not None else "<start>"
        refs.append(SampleRef(path, last, (), f"unreadable tar after {last}: {exc}"))
        return refs
    flush()
    return refs


class MemberReader:
    """Reads a sample's member bytes by offset, keeping a few shard files open."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, object] = OrderedDict()

    def read(self, ref: SampleRef) -> dict[str, bytes]:
        f = self._files.pop(ref.shard, None) or open(ref.shard, "rb")  # noqa: SIM115
        self._files[ref.shard] = f
        while len(self._files) > OPEN_FILES_CACHED:
            self._files.popitem(last=False)[1].close()
        out = {}
        for ext, offset, size in ref.members:
            f.seek(offset)
            out[ext] = f.read(size)
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
