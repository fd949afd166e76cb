"""Per-file sizes and CRC-32 checksums of a training checkpoint, recorded at save, checked on load.

``lct_meta.json`` gets ``files: {name: {"size": bytes, "crc32": "8 hex digits"}}`` for every
DCP file of the checkpoint (``.metadata`` and each ``__<rank>_<n>.distcp``). Each rank hashes the
files it wrote (in parallel); on load the list is split over the ranks of the loading job, so a
check reads every byte once, spread over all ranks (CRC-32 runs at about 1.1 GB/s per core:
``bench/checkpoint_verify.py``). A checkpoint whose meta has no ``files`` entry (written before
checksums existed) is accepted unchecked.

Every function here that takes ``rank``/``world`` with ``world > 1`` is a collective: call it on
all ranks.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch.distributed as dist

from lct_train.core.checkpoint_layout import META_FILE, read_meta

CHUNK_BYTES = 8 << 20
FILES_KEY = "files"


def crc32_file(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def describe(directory: Path, names: list[str]) -> dict[str, dict]:
    """``{name: {"size", "crc32"}}`` of files of ``directory``."""
    return {n: {"size": (directory / n).stat().st_size, "crc32": crc32_file(directory / n)}
            for n in names}


def rank_files(directory: Path, rank: int) -> list[str]:
    """The DCP files rank ``rank`` wrote (rank 0 also writes ``.metadata``)."""
    names = sorted(p.name for p in directory.glob(f"__{rank}_*.distcp"))
    return ([".metadata"] if rank == 0 else []) + names


def record_files(directory: Path, rank: int, world: int) -> dict[str, dict] | None:
    """Hashes this rank's files; returns every rank's entries on rank 0 (None elsewhere)."""
    mine = describe(directory, rank_files(directory, rank))
    if world == 1:
        return mine
    parts = [None] * world if rank == 0 else None
    dist.gather_object(mine, parts, dst=0)
    if rank != 0:
        return None
    return {name: entry for part in parts for name, entry in part.items()}


def check_files(directory: Path, expected: dict[str, dict]) -> str | None:
    """The first problem with the listed files (missing, wrong size, wrong checksum), or None."""
    for name, want in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            return f"file {name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"file {name} has {size} bytes, {want['size']} were written (truncated?)"
        got = crc32_file(path)
        if got != want["crc32"]:
            return f"file {name} has CRC-32 {got}, {want['crc32']} was written (corrupt)"
    return None


def verify(ckpt: Path, rank: int = 0, world: int = 1) -> str | None:
    """None when every recorded file of ``ckpt`` checks out, else one message naming the file.

    The same answer on every rank: each checks its share of the files, then all compare.
    """
    problem = _local_problem(ckpt, rank, world)
    if world > 1:
        found = [None] * world
        dist.all_gather_object(found, problem)
        problem = next((p for p in found if p is not None), None)
    return problem


def _local_problem(ckpt: Path, rank: int, world: int) -> str | None:
    """This rank's share of ``verify``: the meta file, then its slice of the recorded files."""
    if not (ckpt / META_FILE).is_file():  # renamed to step-N only after the meta was written
        return f"its {META_FILE} is missing"
    try:
        expected = read_meta(ckpt).get(FILES_KEY) or {}
    except Exception as err:  # an unreadable meta file is a bad checkpoint, named
        return str(err)
    names = sorted(expected)[rank::world]
    return check_files(ckpt, {n: expected[n] for n in names})
