"""``lct-shards synth``: a procedural multi-shot dataset written as real mp4 files + manifest.

Output directory::

    videos/<key>_shot<i>.mp4   one file per shot (multi-shot scenes, authentic cuts)
    videos/<key>_cont.mp4      one continuous shot, split into segments by start/end times
    gt/<key>.json              ground truth: every attribute of characters and room (``hidden``
                               lists those no prompt states), per-shot camera/positions
    manifest.jsonl             every scene (SPEC §1 prompts), for ``lct-shards build``
    manifest_multishot.jsonl / manifest_segments.jsonl   the two kinds apart (source mixing)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.manifest import write_manifest
from data_tools.synth_world import (
    Character,
    ShotPlan,
    positions,
    render_shot,
    sample_shot,
    sample_world,
    world_truth,
)
from lct_train.data import schema
from lct_train.sample.writers import write_mp4

SOURCE_MULTISHOT = "synth-multishot"
SOURCE_SEGMENTS = "synth-segments"
KEY_FORMAT = "synth-{:06d}"


@dataclass
class SynthConfig:
    num_scenes: int = 16
    min_shots: int = 2
    max_shots: int = 5
    min_frames: int = 4
    max_frames: int = 8
    height: int = 64
    width: int = 64
    fps: float = 8.0
    p_continuous: float = 0.3  # share of scenes that are one continuous shot split in segments
    max_characters: int = 3
    seed: int = 0
    # Characters' exact colours, sizes, textures and the room's colour and pattern are drawn
    # per scene and left out of the prompts (False: named palette entries, all in the prompts).
    hidden: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.min_shots <= self.max_shots:
            raise ValueError(f"synth: need 1 <= min_shots <= max_shots, got {self.min_shots}, {self.max_shots}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"synth: need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"synth: H.264 needs even sizes, got {self.height}x{self.width}")
        if self.num_scenes < 1 or self.fps <= 0:
            raise ValueError("synth: num_scenes must be >= 1 and fps > 0")


def _direction(v: tuple[float, float]) -> str:
    vx, vy = v
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def global_prompt(chars: list[Character], env_text: str, story: str) -> str:
    people = "; ".join(f"Character {c.index}: {c.describe()}" for c in chars)
    return f"{people}. {env_text} {story}"


def shot_prompt(plan: ShotPlan, chars: list[Character], cut: bool) -> str:
    subject = f" of Character {plan.focus}" if plan.focus else " of the room"
    moves = ", ".join(f"Character {c.index} moves {_direction(plan.velocity[c.index])}" for c in chars)
    text = f"{plan.framing.capitalize()} shot{subject}. {moves}."
    return schema.shot_prompt(text, cut)


def _story(chars: list[Character]) -> str:
    names = " and ".join(f"Character {c.index}" for c in chars)
    return f"{names} wander around the room." if len(chars) > 1 else f"{names} wanders around the room."


def _shot_truth(plan: ShotPlan, truth: list[dict], start: float | None, end: float | None) -> dict:
    return {"framing": plan.framing, "focus": plan.focus, "start": start, "end": end,
            "visible": sorted({k for f in truth for k in f["visible"]}), "frames": truth}


def _multishot(cfg: SynthConfig, rng, key: str, out: Path) -> tuple[dict, dict]:
    chars, env = sample_world(rng, cfg.max_characters, cfg.hidden)
    n = int(rng.integers(cfg.min_shots, cfg.max_shots + 1))
    shots, truths = [], []
    for i in range(n):
        plan = sample_shot(rng, chars)
        frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        video, truth = render_shot(chars, env, plan, frames, cfg.fps, (cfg.height, cfg.width))
        rel = f"videos/{key}_shot{i}.mp4"
        write_mp4(out / rel, video, cfg.fps)
        shots.append({"path": rel, "prompt": shot_prompt(plan, chars, cut=True), "cut": True})
        truths.append(_shot_truth(plan, truth, None, None))
    scene = {"key": key, "source": SOURCE_MULTISHOT,
             "global_prompt": global_prompt(chars, env.describe(), _story(chars)), "shots": shots}
    return scene, world_truth(chars, env) | {"continuous": False, "shots": truths}


def _segments(cfg: SynthConfig, rng, key: str, out: Path) -> tuple[dict, dict]:
    chars, env = sample_world(rng, cfg.max_characters, cfg.hidden)
    n = int(rng.integers(max(2, cfg.min_shots), max(2, cfg.max_shots) + 1))
    plan = sample_shot(rng, chars)
    videos, shots, truths, t = [], [], [], 0.0
    story = _story(chars) + " One continuous take."
    rel = f"videos/{key}_cont.mp4"
    for _i in range(n):
        frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        video, truth = render_shot(chars, env, plan, frames, cfg.fps, (cfg.height, cfg.width))
        start, end = t, t + frames / cfg.fps
        shots.append({"path": rel, "start": start, "end": end, "prompt": shot_prompt(plan, chars, cut=False),
                      "cut": False})
        truths.append(_shot_truth(plan, truth, start, end))
        videos.append(video)
        t = end
        nxt = sample_shot(rng, chars, framing=plan.framing)  # new event, same camera, continuous motion
        end_pos = positions(plan, frames / cfg.fps)
        plan = ShotPlan(plan.framing, plan.focus, end_pos, nxt.velocity)
    write_mp4(out / rel, np.concatenate(videos), cfg.fps)
    scene = {"key": key, "source": SOURCE_SEGMENTS,
             "global_prompt": global_prompt(chars, env.describe(), story), "shots": shots}
    return scene, world_truth(chars, env) | {"continuous": True, "shots": truths}


def write_synth(cfg: SynthConfig, out_dir: str | Path) -> list[dict]:
    """Renders ``cfg.num_scenes`` scenes under ``out_dir``; returns the manifest rows."""
    out = Path(out_dir)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    scenes = []
    for i in range(cfg.num_scenes):
        key = KEY_FORMAT.format(i)
        continuous = rng.random() < cfg.p_continuous
        scene, truth = (_segments if continuous else _multishot)(cfg, rng, key, out)
        (out / "gt" / f"{key}.json").write_text(json.dumps(truth))
        scenes.append(scene)
    write_manifest(out / "manifest.jsonl", scenes)
    write_manifest(out / "manifest_multishot.jsonl", [s for s in scenes if s["source"] == SOURCE_MULTISHOT])
    write_manifest(out / "manifest_segments.jsonl", [s for s in scenes if s["source"] == SOURCE_SEGMENTS])
    (out / "synth.json").write_text(json.dumps(cfg.__dict__))
    return scenes
