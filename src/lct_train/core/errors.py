"""The error types shared across packages, and the strict key/shape check of every weight path.

Every failure names its culprit: the dotted config key, the file, the missing / unexpected keys,
the mismatched shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

MAX_KEYS_LISTED = 40  # keys printed per category before the list is elided


class ConfigError(ValueError):
    """A config value is invalid; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class ConversionError(RuntimeError):
    """A conversion refused its input; the message lists the offending keys or files."""


def format_keys(title: str, keys: Iterable[str]) -> str:
    """`title (n):` followed by one key per line, elided after `MAX_KEYS_LISTED` keys."""
    keys = sorted(keys)
    lines = [f"{title} ({len(keys)}):"]
    lines += [f"  {k}" for k in keys[:MAX_KEYS_LISTED]]
    if len(keys) > MAX_KEYS_LISTED:
        lines.append(f"  ... and {len(keys) - MAX_KEYS_LISTED} more")
    return "\n".join(lines)


def check_keys_and_shapes(
    actual: Mapping[str, Sequence[int]],
    expected: Mapping[str, Sequence[int]],
    *,
    what: str,
    missing_title: str = "missing keys",
    unexpected_title: str = "unexpected keys",
) -> None:
    """Raise `ConversionError` unless `actual` has exactly the keys and shapes of `expected`.

    `what` names the checked object (a file, a checkpoint) in the message.
    """
    missing = expected.keys() - actual.keys()
    unexpected = actual.keys() - expected.keys()
    mismatched = [
        f"{k}: got {tuple(actual[k])}, expected {tuple(expected[k])}"
        for k in sorted(actual.keys() & expected.keys())
        if tuple(actual[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{what} does not match the expected parameters:"]
    if missing:
        parts.append(format_keys(missing_title, missing))
    if unexpected:
        parts.append(format_keys(unexpected_title, unexpected))
    if mismatched:
        parts.append(format_keys("shape mismatches", mismatched))
    raise ConversionError("\n".join(parts))
