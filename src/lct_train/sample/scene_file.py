"""The scene file of ``lct-sample``: YAML or JSON, parsed and validated into a ``SceneRequest``.

Format (keys not listed are an error, so typos never pass silently)::

    global_prompt: "Character 1: ...; [Environment] ...; [Story] ..."
                           # optional: without it the scene has no global group (a one-shot
                           # scene is then exactly the source model's single-shot forward)
    key: synth-000003      # optional: the scene it follows (keys lct-eval's manifest row)
    mode: joint            # joint | conditioned | ar | ar-kv   (SPEC §7)
    steps: 30              # Euler steps per generated shot
    guidance: 5.0          # classifier-free guidance scale on the text (1 = no uncond branch)
    embedded_guidance: 6.0 # value fed to a guidance embedding (models that have one)
    t_c: 0.3               # conditioning timestep of given / history shots, in [0, 1)
    shift: 7.0             # timestep shift of the sampling grid
    negative_prompt: "..." # text of the guidance's uncond branch ("" = the empty prompt)
    seed: 0                # base seed: shot i uses seed + i unless it sets its own
    size: {frames: 9, height: 64, width: 64}   # default pixel size of generated shots
    shots:
      - prompt: "Character 1 opens the door."
        cut: true          # false = shot extension: no "[SHOT CUT] " marker
        seed: 7
        size: {frames: 1, height: 64, width: 64}
        condition: ref/char.png   # given shot: image / video / .safetensors latent (relative
                                  # paths are relative to the scene file); held at t_c
      - prompt: "..."
        context: [0]       # ar / ar-kv: earlier shots (indices) this shot sees; default all
        noise: z0.safetensors     # initial noise of this shot: one tensor of its latent shape
                                  # [C, F, h, w] (relative to the scene file), else from its seed

Sampling settings left out come from the model's preset (``sampling`` block of its config:
hunyuan-video samples with steps 50, guidance 1, embedded_guidance 6, shift 7; the Wan presets
with steps 50, guidance 5, shift 3 or 5 and Wan's official negative prompt), else from the
sampler's defaults (steps 30, guidance 5, the resolution rule for the shift, the empty prompt as
the negative); lct-sample's flags override both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lct_train.data.schema import SHOT_CUT, shot_prompt, strip_cut
from lct_train.sample.modes import AR, JOINT, MODES
from lct_train.sample.sampler import DEFAULT_T_C, SamplingError, SamplingSettings

MODE_ALIASES = {"conditioned": JOINT, "visual-conditioned": JOINT, "autoregressive": AR}
DEFAULT_SEED = 0

_SCENE_KEYS = {
    "global_prompt", "mode", "steps", "guidance", "embedded_guidance", "t_c", "shift", "seed",
    "size", "shots", "key", "negative_prompt",
}
_SHOT_KEYS = {"prompt", "cut", "seed", "size", "condition", "context", "noise"}
_SIZE_KEYS = ("frames", "height", "width")


class SceneFileError(ValueError):
    """A malformed scene file; the message names the file and the offending key."""


@dataclass(frozen=True)
class ShotSize:
    """Pixel size of a shot: ``frames`` (1 = an image), ``height``, ``width``."""

    frames: int
    height: int
    width: int


@dataclass(frozen=True)
class ShotRequest:
    """One shot of a scene file: prompt, cut flag, seed, size, optional condition media."""

    prompt: str
    cut: bool = True
    seed: int = DEFAULT_SEED
    size: ShotSize | None = None
    condition: Path | None = None
    context: tuple[int, ...] | None = None
    noise: Path | None = None  # initial noise file (checked against the latent shape later)

    @property
    def full_prompt(self) -> str:
        """The prompt as the model saw it in training (SPEC §1 marker for a cut)."""
        return shot_prompt(self.prompt, self.cut)

    @property
    def is_condition(self) -> bool:
        return self.condition is not None


@dataclass(frozen=True)
class SceneRequest:
    """A validated scene file; sampling settings it leaves out are ``None`` (``resolve_settings``
    fills them from the model preset, else the sampler's defaults)."""

    global_prompt: str | None  # None: no global group
    shots: tuple[ShotRequest, ...]
    mode: str = JOINT
    steps: int | None = None
    guidance: float | None = None
    embedded_guidance: float | None = None
    t_c: float = DEFAULT_T_C
    shift: float | None = None
    negative_prompt: str | None = None
    seed: int = DEFAULT_SEED
    key: str | None = None  # the scene it follows (lct-eval's ground truth), if any
    source: str = field(default="<dict>", compare=False)


def load_scene_file(path: str | os.PathLike) -> SceneRequest:
    """Reads and validates a ``.yaml``/``.yml``/``.json`` scene file."""
    path = Path(path)
    if not path.is_file():
        raise SceneFileError(f"scene file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SceneFileError(f"scene file {path}: cannot parse: {exc}") from exc
    return parse_scene(data, source=str(path), base_dir=path.parent)


def parse_scene(data: Any, *, source: str = "<dict>", base_dir: Path | None = None) -> SceneRequest:
    """Validates a parsed scene mapping; every error names ``source`` and the key."""

    def fail(msg: str) -> SceneFileError:
        return SceneFileError(f"scene file {source}: {msg}")

    if not isinstance(data, dict):
        raise fail(f"top level must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _SCENE_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {unknown}; allowed: {sorted(_SCENE_KEYS)}")
    mode = str(data.get("mode", JOINT))
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise fail(f"mode {mode!r} is not one of {MODES} (aliases: {sorted(MODE_ALIASES)})")
    given = {k: data.get(k) for k in ("steps", "guidance", "embedded_guidance", "shift")}
    given = {k: None if v is None else (_int if k == "steps" else _float)(v, k, fail)
             for k, v in given.items()}
    t_c = _float(data.get("t_c", DEFAULT_T_C), "t_c", fail)
    try:  # the ranges: SamplingSettings checks them
        SamplingSettings(**{k: v for k, v in given.items() if v is not None}, t_c=t_c)
    except SamplingError as err:
        raise fail(str(err)) from None
    seed = _int(data.get("seed", DEFAULT_SEED), "seed", fail)
    default_size = _size(data["size"], "size", fail) if "size" in data else None
    global_prompt = data.get("global_prompt")
    if global_prompt is not None and not isinstance(global_prompt, str):
        raise fail("global_prompt must be a string")
    negative_prompt = data.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise fail("negative_prompt must be a string")
    key = data.get("key")
    if key is not None and (not isinstance(key, str) or key in ("", ".", "..") or "/" in key):
        raise fail(f"key must be a scene name (non-empty, no '/', not '.' or '..'), got {key!r}")
    raw_shots = data.get("shots")
    if not isinstance(raw_shots, list) or not raw_shots:
        raise fail("'shots' must be a non-empty list")
    shots = tuple(
        _shot(raw, i, seed, default_size, mode, fail, base_dir) for i, raw in enumerate(raw_shots)
    )
    if all(s.is_condition for s in shots):
        raise fail("every shot has a condition: nothing to generate")
    return SceneRequest(global_prompt=global_prompt, shots=shots, mode=mode, t_c=t_c, seed=seed,
                        key=key, source=source, negative_prompt=negative_prompt, **given)


def _shot(raw, index, base_seed, default_size, mode, fail, base_dir) -> ShotRequest:
    where = f"shots[{index}]"
    if not isinstance(raw, dict):
        raise fail(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SHOT_KEYS)
    if unknown:
        raise fail(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SHOT_KEYS)}")
    prompt = raw.get("prompt", "")
    if not isinstance(prompt, str):
        raise fail(f"{where}.prompt must be a string")
    cut = raw.get("cut", True)
    if not isinstance(cut, bool):
        raise fail(f"{where}.cut must be true or false")
    stripped = strip_cut(prompt)
    if stripped != prompt:
        if not cut:
            raise fail(f"{where}: prompt starts with {SHOT_CUT.strip()!r} but cut is false")
        prompt = stripped
    seed = _int(raw.get("seed", base_seed + index), f"{where}.seed", fail)
    size = _size(raw["size"], f"{where}.size", fail) if "size" in raw else default_size
    condition = _path(raw.get("condition"), f"{where}.condition", fail, base_dir)
    noise = _path(raw.get("noise"), f"{where}.noise", fail, base_dir)
    if noise is not None and condition is not None:
        raise fail(f"{where}: noise starts a generated shot; a shot with a condition is given")
    if condition is not None:
        if not condition.exists():
            raise fail(f"{where}.condition {condition} does not exist")
    elif size is None:
        raise fail(f"{where} has neither a size nor a scene-level default size")
    context = raw.get("context")
    if context is not None:
        if mode == JOINT:
            raise fail(f"{where}.context is only used by the ar / ar-kv modes, not {mode!r}")
        if not isinstance(context, list) or not all(isinstance(c, int) for c in context):
            raise fail(f"{where}.context must be a list of shot indices")
        bad = [c for c in context if not 0 <= c < index]
        if bad:
            raise fail(f"{where}.context {bad} must name earlier shots (0..{index - 1})")
        if len(set(context)) != len(context):
            raise fail(f"{where}.context {context} repeats a shot")
        context = tuple(context)
    return ShotRequest(prompt=prompt, cut=cut, seed=seed, size=size, condition=condition,
                       context=context, noise=noise)


def _path(raw, where, fail, base_dir) -> Path | None:
    """A file path of the scene file (relative ones: to the scene file's folder)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise fail(f"{where} must be a file path")
    path = Path(raw)
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


def _size(raw, where, fail) -> ShotSize:
    if not isinstance(raw, dict) or set(raw) != set(_SIZE_KEYS):
        raise fail(f"{where} must be a mapping with exactly the keys {list(_SIZE_KEYS)}")
    return ShotSize(*(_int(raw[k], f"{where}.{k}", fail, minimum=1) for k in _SIZE_KEYS))


def _int(value, where, fail, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{where} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise fail(f"{where} must be >= {minimum}, got {value}")
    return value


def _float(value, where, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"{where} must be a number, got {value!r}")
    return float(value)
