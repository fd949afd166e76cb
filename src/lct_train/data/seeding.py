"""Stable seeds: a 63-bit integer from any tuple of ints/strings (same on every host/process)."""

from __future__ import annotations

import hashlib

SEED_BITS = 63


def stable_seed(*parts: object) -> int:
    """Hashes ``parts`` (their ``repr``) to a non-negative int usable by torch and random."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)
