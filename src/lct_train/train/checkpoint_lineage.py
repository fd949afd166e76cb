"""The current line of a run's checkpoints: what a start resumes, what it sets aside.

A run directory holds one *line* of checkpoints: the ones ``resume=auto`` may continue. A start
that does not continue from the newest of them (an explicit ``resume=<step-N>``, ``resume=none``,
or ``auto`` falling back past a corrupt checkpoint) begins a new line at its start step: every
checkpoint of ``checkpoints/`` newer than that step belongs to the abandoned line and is moved,
whole, to ``checkpoints/abandoned/<time>-from-step-<N>/`` (kept, never deleted; one log line).
``auto`` then follows the new line, and the abandoned checkpoints can no longer shadow it or be
purged in its place.

Interrupted saves: a save writes ``step-N.tmp-<id>/`` and renames it when complete
(``lct_meta.json`` is written last). A ``*.tmp-*`` directory without ``lct_meta.json`` is a
partial write and is removed at the next start; one *with* it is complete (the kill came
between the meta file and the rename) and is renamed to ``step-N`` (or set aside when
``step-N`` exists). A complete checkpoint is never deleted.

Only rank 0 calls ``settle`` (after every check of the start has passed) and ``set_aside``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from lct_train.core.checkpoint_layout import (
    META_FILE,
    STEP_RE,
    TMP_MARK,
    list_checkpoints,
    step_name,
)

SET_ASIDE_DIR = "abandoned"


def _step_of(path: Path) -> int | None:
    match = STEP_RE.match(path.name.split(TMP_MARK, 1)[0])
    return int(match.group(1)) if match else None


def interrupted_saves(root: Path) -> list[tuple[int, Path]]:
    """Complete ``step-N.tmp-*`` directories whose ``step-N`` does not exist, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.glob(f"step-*{TMP_MARK}*"):
        step = _step_of(path)
        if step is not None and (path / META_FILE).is_file() \
                and not (root / step_name(step)).exists():
            found.append((step, path))
    return sorted(found)


def metaless(root: Path) -> list[tuple[int, Path]]:
    """``step-N`` directories (final names) whose ``lct_meta.json`` is gone: a rename only
    happens after the meta is written, so such a directory is a damaged checkpoint."""
    if not root.is_dir():
        return []
    return sorted((_step_of(p), p) for p in root.glob("step-*")
                  if STEP_RE.match(p.name) and p.is_dir() and not (p / META_FILE).is_file())


def candidates(root: Path) -> list[tuple[int, Path]]:
    """What ``resume=auto`` may continue from, newest first (interrupted saves included; one
    per step). A checkpoint that lost its meta is listed too, so that verifying it names the
    damage instead of passing over it in silence."""
    by_step = dict(interrupted_saves(root))
    by_step.update(dict(metaless(root)))
    by_step.update(dict(list_checkpoints(root)))
    return sorted(by_step.items(), reverse=True)


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def set_aside(paths: list[Path], dest: Path) -> list[Path]:
    """Moves whole checkpoint directories into ``dest`` (created); returns their new paths."""
    dest.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in sorted(paths):
        target = dest / path.name
        n = 1
        while target.exists():
            target = dest / f"{path.name}.{n}"
            n += 1
        path.rename(target)
        moved.append(target)
    return moved


def settle(root: Path, start_step: int, resumed: Path | None) -> tuple[Path | None, list[str]]:
    """Makes ``root`` hold exactly the current line, starting at ``start_step``.

    Removes partial saves, completes interrupted ones, and sets aside every checkpoint newer
    than ``start_step`` (and one of ``start_step`` itself that is not the one resumed). Returns
    the resumed checkpoint's path afterwards and the log lines to print.
    """
    root.mkdir(parents=True, exist_ok=True)
    messages = []
    for path in root.glob(f"step-*{TMP_MARK}*"):
        if not (path / META_FILE).is_file():
            shutil.rmtree(path, ignore_errors=True)  # a partial write: nothing to keep
    for step, path in interrupted_saves(root):
        final = root / step_name(step)
        if final.exists():
            continue  # a second complete copy of this step: set aside below
        path = resumed if resumed is not None and resumed.parent == root \
            and _step_of(resumed) == step and TMP_MARK in resumed.name else path
        path.rename(final)
        messages.append(f"lct-train: completed the interrupted save of {final}")
        if path == resumed:
            resumed = final
    duplicates = [p for p in root.glob(f"step-*{TMP_MARK}*") if (p / META_FILE).is_file()]
    newer = [p for s, p in list_checkpoints(root) + metaless(root)
             if s > start_step or (s == start_step and p != resumed)]
    if newer or duplicates:
        dest = root / SET_ASIDE_DIR / f"{stamp()}-from-{step_name(start_step)}"
        moved = set_aside(newer + duplicates, dest)
        names = ", ".join(p.name for p in moved)
        messages.append(f"lct-train: starting a new line of checkpoints at step {start_step}: "
                        f"set aside {len(moved)} checkpoint(s) of the abandoned line ({names}) "
                        f"in {dest}")
    return resumed, messages
