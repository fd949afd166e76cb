"""JSON Lines reading shared by the manifests (``lct-shards``' scene manifest, ``lct-eval``'s)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, object]]:
    """``(where, record)`` for each non-blank line, ``where`` = ``path:line``; a line that is
    not JSON raises ``error`` naming it."""
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: invalid JSON: {exc}") from None
