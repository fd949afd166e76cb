"""``lct-shards split``: cut a long video into shots with PySceneDetect -> manifest skeleton.

Consecutive shots are grouped into scenes of at most ``max_shots``; prompts are left as
``TODO`` placeholders for a captioner (global prompt in SPEC §1 form, per-shot events).
"""

from __future__ import annotations

from pathlib import Path

import av
from scenedetect import ContentDetector, detect

from data_tools.manifest import PLACEHOLDER, write_manifest
from lct_train.data.config import DEFAULT_MAX_SHOTS

TODO_GLOBAL = f"{PLACEHOLDER} Character 1: <description>. <environment>. <story>."
TODO_SHOT = f"{PLACEHOLDER} <event in this shot, naming Character K>"
DEFAULT_THRESHOLD = 27.0


def detect_shots(video: str | Path, threshold: float = DEFAULT_THRESHOLD,
                 min_scene_len: int = 15) -> list[tuple[float, float]]:
    """``[(start_s, end_s), ...]`` of the detected shots (one shot if there is no cut)."""
    scenes = detect(str(video), ContentDetector(threshold=threshold, min_scene_len=min_scene_len))
    if not scenes:  # PySceneDetect reports no list when it finds no cut
        return [(0.0, video_duration(video))]
    return [(float(s.seconds), float(e.seconds)) for s, e in scenes]


def video_duration(video: str | Path) -> float:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return sum(1 for _ in container.decode(stream)) / float(stream.average_rate)


def split_video(video: str | Path, out_manifest: str | Path, *, max_shots: int = DEFAULT_MAX_SHOTS,
                threshold: float = DEFAULT_THRESHOLD, min_scene_len: int = 15) -> list[dict]:
    shots = detect_shots(video, threshold, min_scene_len)
    if not shots or shots[0][1] <= 0:
        raise ValueError(f"{video}: no shots detected (empty or unreadable video)")
    stem = Path(video).stem.replace(".", "_")
    scenes = []
    for i in range(0, len(shots), max_shots):
        group = shots[i : i + max_shots]
        scenes.append({
            "key": f"{stem}-{i // max_shots:05d}",
            "global_prompt": TODO_GLOBAL,
            "shots": [{"path": str(Path(video).resolve()), "start": s, "end": e, "prompt": TODO_SHOT, "cut": True}
                      for s, e in group],
        })
    write_manifest(out_manifest, scenes)
    return scenes
