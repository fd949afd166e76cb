"""The JSONL scene manifest that ``lct-shards build`` reads (one scene per line, SPEC §1).

    {"key": "scene-0001", "global_prompt": "Character 1: ...; ... [environment] [story]",
     "source": "synth-multishot",
     "shots": [{"path": "videos/a.mp4", "start": 0.0, "end": 2.0,
                "prompt": "Character 1 walks in.", "cut": true}, ...]}

``key``, ``source``, ``start``, ``end`` and ``cut`` are optional; relative media paths are
resolved against the manifest's directory. Errors name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lct_train.core.files import write_atomic
from lct_train.core.jsonl import read_jsonl
from lct_train.data.schema import shot_prompt, strip_cut

KEY_FORMAT = "scene-{:08d}"
PLACEHOLDER = "TODO"  # ``lct-shards split`` leaves prompts starting with it for a captioner


@dataclass
class ShotEntry:
    path: str
    prompt: str
    start: float | None = None
    end: float | None = None
    cut: bool = True

    @property
    def rendered_prompt(self) -> str:
        """The per-shot prompt as trained on: authentic cuts carry the ``[SHOT CUT]`` marker."""
        return shot_prompt(self.prompt, self.cut)


@dataclass
class SceneEntry:
    key: str
    global_prompt: str
    shots: list[ShotEntry]
    source: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def placeholder_prompts(scene: SceneEntry) -> list[str]:
    """Where a manifest scene still has ``split``'s placeholder prompts:
    ``["global_prompt", "shots[2].prompt", ...]``."""
    found = ["global_prompt"] if strip_cut(scene.global_prompt).startswith(PLACEHOLDER) else []
    return found + [f"shots[{i}].prompt" for i, shot in enumerate(scene.shots)
                    if strip_cut(shot.prompt).startswith(PLACEHOLDER)]


def _scene(data: dict, where: str, root: Path, index: int) -> SceneEntry:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a line must be a JSON object")
    if not isinstance(data.get("global_prompt"), str):
        raise ValueError(f"{where}: 'global_prompt' (a string) is required")
    shots = data.get("shots")
    if not isinstance(shots, list) or not shots:
        raise ValueError(f"{where}: 'shots' must be a non-empty list")
    out = []
    for j, shot in enumerate(shots):
        if not isinstance(shot, dict) or not isinstance(shot.get("path"), str):
            raise ValueError(f"{where}: shots[{j}].path (a string) is required")
        path = Path(shot["path"])
        start, end = shot.get("start"), shot.get("end")
        if start is not None and end is not None and float(end) <= float(start):
            raise ValueError(f"{where}: shots[{j}] end {end} <= start {start}")
        out.append(ShotEntry(
            path=str(path if path.is_absolute() else root / path),
            prompt=str(shot.get("prompt", "")),
            start=None if start is None else float(start),
            end=None if end is None else float(end),
            cut=bool(shot.get("cut", True)),
        ))
    key = str(data.get("key") or KEY_FORMAT.format(index))
    if "." in key or "/" in key:
        raise ValueError(f"{where}: key {key!r} must not contain '.' or '/' (webdataset keys)")
    return SceneEntry(key, data["global_prompt"], out, str(data.get("source", "")), dict(data.get("extra", {})))


def read_manifest(path: str | Path) -> list[SceneEntry]:
    path = Path(path)
    scenes, keys = [], set()
    for where, data in read_jsonl(path):
        scene = _scene(data, where, path.parent, len(scenes))
        if scene.key in keys:
            raise ValueError(f"{where}: duplicate key {scene.key!r}")
        keys.add(scene.key)
        scenes.append(scene)
    if not scenes:
        raise ValueError(f"{path}: manifest has no scenes")
    return scenes


def write_manifest(path: str | Path, scenes: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(s) + "\n" for s in scenes))
