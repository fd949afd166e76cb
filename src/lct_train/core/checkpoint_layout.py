"""The on-disk layout of a training checkpoint (design.md §6), shared by train, convert, sample.

Owns: the directory naming (``<run>/checkpoints/step-<NNNNNNNN>/``, temporary ``*.tmp-*``
names), what counts as a checkpoint (a directory holding ``lct_meta.json``; ``*.tmp-*`` never
does), the choice of the newest valid one, reading ``lct_meta.json`` (and the mask and context
window it records; ``convert.model_spec`` reads its model config), and which weight sets
(``ema`` / ``model``) a checkpoint stores. Nothing here needs a process group or imports torch.distributed at import time.

Errors name the culprit path: ``NoCheckpointError`` (a ``FileNotFoundError``) and
``BadMetaError`` (a ``ValueError``), both ``CheckpointLayoutError``; callers re-raise them as
their own error types (``ConversionError``, the sampler's ``CheckpointError``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
META_FILE = "lct_meta.json"
STEP_PREFIX = "step-"
STEP_RE = re.compile(r"^step-(\d{8})$")
TMP_MARK = ".tmp-"
FORMAT = "lct-train-checkpoint/1"
WEIGHT_SETS = ("ema", "model")  # the top-level DCP keys that hold model weights


class CheckpointLayoutError(Exception):
    """Not a checkpoint, or an unreadable ``lct_meta.json``; the message names the path."""


class NoCheckpointError(CheckpointLayoutError, FileNotFoundError):
    pass


class BadMetaError(CheckpointLayoutError, ValueError):
    pass


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A directory holding ``lct_meta.json`` (any name but a temporary ``*.tmp-*`` one)."""
    path = Path(path)
    return TMP_MARK not in path.name and (path / META_FILE).is_file()


def is_valid(path: str | os.PathLike) -> bool:
    """A complete ``step-<NNNNNNNN>`` directory (the names the trainer writes)."""
    path = Path(path)
    return STEP_RE.match(path.name) is not None and (path / META_FILE).is_file()


def _root_of(path: Path) -> Path:
    """``path/checkpoints`` for a run directory, else ``path`` itself."""
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Valid checkpoints directly under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(STEP_RE.match(p.name).group(1)), p) for p in root.iterdir() if is_valid(p)]
    return sorted(found)


def newest_checkpoint(run_or_root: str | os.PathLike) -> Path | None:
    """Newest valid checkpoint of a run directory (or of its ``checkpoints/`` directory)."""
    found = list_checkpoints(_root_of(Path(run_or_root)))
    return found[-1][1] if found else None


def holds_checkpoint(path: str | os.PathLike) -> bool:
    """True for a checkpoint directory, or a run / ``checkpoints/`` directory holding one."""
    return is_checkpoint(path) or newest_checkpoint(path) is not None


def resolve_checkpoint(spec: str | os.PathLike, what: str | None = None) -> Path:
    """A checkpoint directory as is; a run or ``checkpoints/`` directory -> its newest valid step.

    ``what`` (a config key such as ``stage.init_run``) prefixes the error message.
    """
    path = Path(spec)
    if is_checkpoint(path):
        return path
    newest = newest_checkpoint(path)
    if newest is None:
        prefix = f"{what}: " if what else ""
        raise NoCheckpointError(
            f"{prefix}{path} is not a training checkpoint: no {META_FILE} in it, and no "
            f"complete {STEP_PREFIX}NNNNNNNN directory (with {META_FILE}) under {_root_of(path)}"
        )
    return newest


def read_meta(ckpt: str | os.PathLike) -> dict:
    """The ``lct_meta.json`` of a checkpoint directory."""
    file = Path(ckpt) / META_FILE
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError as err:
        raise NoCheckpointError(f"{ckpt} is not a training checkpoint: no {META_FILE}") from err
    except json.JSONDecodeError as err:
        raise BadMetaError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise BadMetaError(f"{file} does not hold a JSON object")
    return meta



def run_settings(meta: dict) -> dict:
    """The stage's attention ``mask`` (top-level) and context window ``max_shots``
    (``config.data.max_shots``) of ``lct_meta.json``; absent ones are left out."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = config.get("data") or {}
    found = {"mask": meta.get("mask"), "max_shots": data.get("max_shots")}
    return {k: v for k, v in found.items() if v is not None}


def dcp_metadata(ckpt: str | os.PathLike):
    """The DCP ``.metadata`` of a checkpoint directory (read without a process group)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return FileSystemReader(str(ckpt)).read_metadata()
    except Exception as err:  # DCP raises plain exceptions for a missing/corrupt .metadata
        raise BadMetaError(f"cannot read the DCP metadata of {ckpt}: {err}") from err


def entry_path(metadata, flat_key: str) -> tuple[str, ...]:
    """The state-dict path (top-level key first) of a flattened DCP metadata key."""
    return tuple(metadata.planner_data.get(flat_key, tuple(flat_key.split(".", 1))))


def stored_weight_sets(metadata) -> list[str]:
    """Which of ``WEIGHT_SETS`` a checkpoint holds (``ema`` is absent when EMA was off), from
    its ``dcp_metadata``."""
    tops = {entry_path(metadata, key)[0] for key in metadata.state_dict_metadata}
    return [w for w in WEIGHT_SETS if w in tops]


def choose_weights(metadata, weights: str | None) -> str:
    """``weights`` as given, or for ``None``: ``ema`` when the checkpoint (its ``dcp_metadata``)
    has it, else ``model``."""
    if weights is not None:
        return weights
    stored = stored_weight_sets(metadata)
    return stored[0] if stored else WEIGHT_SETS[0]
