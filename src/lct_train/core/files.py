"""Small files written whole or not at all (markers, manifests, configs, state)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """``data`` into ``path`` through a temporary file beside it and a rename: a reader, or a
    run killed mid-write, sees the old file or the new one, never a part of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
    return path
