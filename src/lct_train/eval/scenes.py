"""The scenes ``lct-eval`` reads: a JSONL manifest in the synthetic manifest's format.

One scene per line: ``{"key": ..., "shots": [{"path": "videos/a.mp4", "start": 0.0, "end":
1.0, "given": false, "context": [0]}, ...]}``. ``start``/``end`` (seconds) select a segment of
a longer file; ``given`` marks a condition shot (not generated) and ``context`` the earlier
shots a generated shot was conditioned on (its history in the ar modes, the given shots in
joint mode; both written by ``lct-sample``; optional).
Relative paths are resolved against the manifest's folder. Errors name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from lct_train.core.jsonl import read_jsonl
from lct_train.data.video_io import decode_shot, is_image, read_image


class EvalInputError(ValueError):
    """A manifest, ground-truth file or video ``lct-eval`` cannot use; names the culprit."""


@dataclass(frozen=True)
class EvalShot:
    path: Path
    start: float | None = None
    end: float | None = None
    given: bool = False
    context: tuple[int, ...] = ()


@dataclass(frozen=True)
class EvalScene:
    key: str
    shots: tuple[EvalShot, ...]


def _shot(raw, where: str, root: Path, index: int, num_shots: int) -> EvalShot:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise EvalInputError(f"{where}: shots[{index}].path (a string) is required")
    path = Path(raw["path"])
    context = raw.get("context") or ()
    if not isinstance(context, (list, tuple)) or not all(
            isinstance(c, int) and 0 <= c < num_shots and c != index for c in context):
        raise EvalInputError(f"{where}: shots[{index}].context must list other shots' indices")
    start, end = raw.get("start"), raw.get("end")
    return EvalShot(path if path.is_absolute() else root / path,
                    None if start is None else float(start), None if end is None else float(end),
                    bool(raw.get("given", False)), tuple(context))


def read_eval_manifest(path: str | Path) -> list[EvalScene]:
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"manifest {path} does not exist")
    scenes = []
    for where, data in read_jsonl(path, EvalInputError):
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            raise EvalInputError(f"{where}: a scene needs a 'key' (the ground truth's name)")
        shots = data.get("shots")
        if not isinstance(shots, list) or not shots:
            raise EvalInputError(f"{where}: 'shots' must be a non-empty list")
        scenes.append(EvalScene(data["key"], tuple(_shot(s, where, path.parent, i, len(shots))
                                                   for i, s in enumerate(shots))))
    if not scenes:
        raise EvalInputError(f"{path}: manifest has no scenes")
    return scenes


def read_truth(truth_dir: str | Path, key: str) -> dict:
    path = Path(truth_dir) / f"{key}.json"
    if not path.is_file():
        raise EvalInputError(f"no ground truth {path} for scene {key!r}")
    try:
        truth = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(truth.get("shots"), list) or not isinstance(truth.get("characters"), list):
        raise EvalInputError(f"{path}: not a synthetic ground truth (needs 'shots', 'characters')")
    return truth


def shot_frames(shot: EvalShot) -> torch.Tensor:
    """Every frame of the shot (of ``[start, end)`` for a segment): ``uint8 [T, H, W, 3]``."""
    if not shot.path.is_file():
        raise EvalInputError(f"video {shot.path} does not exist")
    try:
        if is_image(shot.path):
            return read_image(shot.path)
        with av.open(str(shot.path)) as container:
            fps = float(container.streams.video[0].average_rate or 0) or None
        if fps is None:
            raise EvalInputError(f"video {shot.path} has no frame rate")
        return decode_shot(shot.path, fps, shot.start, shot.end)
    except (av.error.FFmpegError, ValueError) as exc:
        if isinstance(exc, EvalInputError):
            raise
        raise EvalInputError(f"video {shot.path}: cannot decode: {exc}") from None
