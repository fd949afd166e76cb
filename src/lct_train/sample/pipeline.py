"""From a scene request to an output folder: encode prompts and conditions, run the mode,
write latents / mp4s / contact sheet. The output folder is also a history pool, so a scene can
be continued shot by shot with the interactive commands.

Output folder::

    pool.json, shot_000.safetensors ...   the history pool (per-shot latents, key "latent")
    shot_000.mp4 ...                      each shot decoded
    scene.mp4                             all shots in order
    contact_sheet.png                     one captioned row of frames per shot
    manifest.jsonl                        the scene for ``lct-eval`` (key: the scene file's
                                          ``key``, else the folder's name)
    pending.safetensors / pending.mp4     interactive: the shot awaiting acceptance
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lct_train.core.files import write_atomic
from lct_train.parallel.ulysses import SPGroup
from lct_train.sample.checkpoint_io import LoadedModel
from lct_train.sample.history_pool import PENDING_FILE, HistoryPool, PoolShot
from lct_train.sample.inputs import PromptEmbedding
from lct_train.sample.kv_context import require_causal
from lct_train.sample.media import (
    MediaError,
    encode_condition,
    latent_shape,
    read_frames,
    read_noise,
)
from lct_train.sample.modes import AR_KV, AR_MODES, GIVEN, PlannedShot, generate_scene
from lct_train.sample.prompts import PromptEncoder
from lct_train.sample.sampler import (
    SETTING_NAMES,
    Sampler,
    SamplingError,
    SamplingSettings,
    resolve_settings,
)
from lct_train.sample.scene_file import SceneRequest
from lct_train.sample.writers import (
    DEFAULT_FPS,
    scene_frames,
    to_uint8_frames,
    write_contact_sheet,
    write_mp4,
)

SCENE_VIDEO = "scene.mp4"
MANIFEST = "manifest.jsonl"
CONTACT_SHEET = "contact_sheet.png"
PENDING_VIDEO = "pending.mp4"
SHOT_FILES = "shot_*.safetensors"
SHOT_VIDEOS = "shot_*.mp4"


@dataclass
class Toolkit:
    """Everything a sampling call needs besides the request."""

    loaded: LoadedModel
    codec: object
    prompts: PromptEncoder
    progress: bool = True
    fps: int = DEFAULT_FPS
    sp: SPGroup | None = None  # sequence parallelism (lct-sample --sp under torchrun)
    writes: bool = True  # this process writes the outputs (rank 0 of an SP group)

    def sampler(self, settings: SamplingSettings) -> Sampler:
        """A sampler of ``settings``; its uncond branch gets ``settings.negative_prompt``."""
        return Sampler(self.loaded.model, self.loaded.config,
                       self.prompts.negative(settings.negative_prompt),
                       mask=self.loaded.mask, window=self.loaded.window, settings=settings,
                       progress=self.progress, sp=self.sp)


def settings_of(request: SceneRequest, loaded: LoadedModel) -> SamplingSettings:
    """The request's settings; those it leaves out from the model's preset (``resolve_settings``)."""
    return resolve_settings({k: getattr(request, k) for k in SETTING_NAMES},
                            loaded.config.sampling)


def check_request(request: SceneRequest, loaded: LoadedModel) -> None:
    """Window, mode and settings errors before any work (the scene file is already validated)."""
    if loaded.config.guidance_embeds and settings_of(request, loaded).embedded_guidance is None:
        raise SamplingError(f"scene {request.source}: the model has a guidance embedding and "
                            "neither the scene file, --embedded-guidance nor its preset "
                            "(config sampling.embedded_guidance) sets embedded_guidance")
    if request.mode == AR_KV:
        try:
            require_causal(loaded.mask, str(loaded.source))
        except SamplingError as err:
            raise SamplingError(f"scene {request.source}: {err}") from None
    window = loaded.window
    if request.mode not in AR_MODES and any(s.context is not None for s in request.shots):
        raise SamplingError(f"scene {request.source}: shot contexts are only used by the ar / "
                            f"ar-kv modes, not {request.mode!r}")
    if request.mode not in AR_MODES and len(request.shots) > window:
        raise SamplingError(f"scene {request.source}: {len(request.shots)} shots in mode "
                            f"{request.mode!r} exceed the model's window of {window} shots")
    for i, shot in enumerate(request.shots):
        if shot.context is not None and len(shot.context) + 1 > window:
            raise SamplingError(f"scene {request.source}: shots[{i}].context has "
                                f"{len(shot.context)} shots; with the new shot that exceeds the "
                                f"window of {window}")


def plan_scene(
    request: SceneRequest, kit: Toolkit
) -> tuple[PromptEmbedding | None, list[PlannedShot]]:
    """Encodes the prompts, condition media and noise files of ``request`` (global prompt
    ``None`` when the scene has none: no global group)."""
    texts = [s.full_prompt for s in request.shots]
    has_global = request.global_prompt is not None
    embedded = kit.prompts([request.global_prompt, *texts] if has_global else texts)
    global_prompt = embedded.pop(0) if has_global else None
    patch = kit.loaded.config.patch_size
    shots = []
    for i, (shot, text, prompt) in enumerate(zip(request.shots, texts, embedded)):
        noise = None
        try:
            if shot.condition is not None:
                latent = encode_condition(shot.condition, kit.codec, shot.size)
                shape, source = tuple(latent.shape), str(shot.condition)
            else:
                latent, source = None, None
                shape = latent_shape(kit.codec, shot.size, patch)
                if shot.noise is not None:
                    noise = read_noise(shot.noise, shape)
        except ValueError as exc:
            raise SamplingError(f"scene {request.source}: shots[{i}]: {exc}") from exc
        shots.append(PlannedShot(text=text, prompt=prompt, seed=shot.seed, latent_shape=shape,
                                 condition=latent, context=shot.context, source=source,
                                 noise=noise))
    return global_prompt, shots


def prepare_scene(
    request: SceneRequest, kit: Toolkit
) -> tuple[PromptEmbedding | None, list[PlannedShot]]:
    """Everything that can refuse a request, before any generation: the model checks, then its
    prompts and condition media encoded (``plan_scene``)."""
    check_request(request, kit.loaded)
    return plan_scene(request, kit)


def run_scene(
    request: SceneRequest, kit: Toolkit, out_dir: str | os.PathLike, settings: dict | None = None,
    planned: tuple[PromptEmbedding | None, list[PlannedShot]] | None = None,
) -> HistoryPool:
    """Generates the scene and writes the output folder; returns the pool it saved.
    ``settings`` are stored in the pool for the interactive commands; ``planned``: the
    request's ``prepare_scene`` when the caller made it already."""
    global_prompt, shots = planned if planned is not None else prepare_scene(request, kit)
    results = generate_scene(kit.sampler(settings_of(request, kit.loaded)), global_prompt, shots,
                             request.mode)
    pool = HistoryPool(global_prompt=request.global_prompt, shots=results,
                       settings=dict(settings or {}))
    if not kit.writes:
        return pool
    clear_scene_outputs(out_dir)
    pool.save(out_dir)
    render_pool(pool, kit, out_dir)
    return pool


def clear_scene_outputs(out_dir: str | os.PathLike) -> None:
    """``scene`` starts a new pool: shot files left by an earlier run in the same folder would
    otherwise be taken as accepted shots (the pool and ``render_pool`` never rewrite those)."""
    out = Path(out_dir)
    for pattern in (SHOT_FILES, SHOT_VIDEOS, PENDING_FILE, PENDING_VIDEO, MANIFEST):
        for stale in out.glob(pattern):
            stale.unlink()


def caption(index: int | str, shot: PoolShot) -> str:
    ctx = f" ctx={list(shot.context)}" if shot.context else ""
    return f"#{index} {shot.mode}{ctx} seed={shot.seed}: {shot.prompt}"


def decode(kit: Toolkit, shot: PoolShot):
    return to_uint8_frames(kit.codec.decode(shot.latent.float()))


def pixel_shape(kit: Toolkit, shot: PoolShot) -> tuple[int, int, int]:
    """``(frames, height, width)`` that ``shot``'s latent decodes to."""
    _, f, h, w = shot.latent.shape
    sf = kit.codec.spatial_factor
    return kit.codec.pixel_frames(f), h * sf, w * sf


def accepted_frames(kit: Toolkit, shot: PoolShot, path: Path):
    """The frames of an accepted shot: read back from its mp4 when that is there with the
    shot's size (accepted shots never change, so an interactive call decodes only new shots),
    else decoded from the latent and written to ``path``."""
    if path.exists():
        try:
            video = to_uint8_frames(read_frames(path))
        except MediaError:
            video = None
        frames, height, width = pixel_shape(kit, shot)
        # write_mp4 pads odd sizes by one row / column
        if video is not None and video.shape[0] == frames and video.shape[1] - height in (0, 1) \
                and video.shape[2] - width in (0, 1):
            return video[:, :height, :width]
    video = decode(kit, shot)
    write_mp4(path, video, kit.fps)
    return video


def eval_manifest_row(pool: HistoryPool, folder: Path, relative_to: Path | None = None) -> dict:
    """The accepted shots of the pool in ``folder`` as one scene of ``lct-eval``'s manifest
    format; shot paths relative to ``relative_to`` (default: ``folder``)."""
    prefix = Path(".") if relative_to is None else folder.resolve().relative_to(
        relative_to.resolve())
    key = pool.settings.get("key") or folder.resolve().name
    shots = [{"path": str(prefix / f"shot_{i:03d}.mp4"), "prompt": shot.prompt,
              "given": shot.mode == GIVEN, "context": list(shot.context), "mode": shot.mode,
              "seed": shot.seed} for i, shot in enumerate(pool.shots)]
    return {"key": key, "global_prompt": pool.global_prompt, "source": "lct-sample",
            "shots": shots}


def write_manifest(out: Path, rows: list[dict]) -> Path:
    """``out/manifest.jsonl`` of ``rows``, written atomically."""
    return write_atomic(out / MANIFEST, "".join(json.dumps(row) + "\n" for row in rows))


def write_scenes_manifest(out_dir: str | os.PathLike, scenes: list[tuple[Path, HistoryPool]]) -> Path:
    """``out_dir/manifest.jsonl``: the ``(folder, pool)`` scenes (sub-folders of ``out_dir``) as
    one ``lct-eval`` manifest, shot paths relative to ``out_dir``."""
    out = Path(out_dir)
    return write_manifest(out, [eval_manifest_row(pool, Path(folder), out)
                                for folder, pool in scenes])


def render_pool(pool: HistoryPool, kit: Toolkit, out_dir: str | os.PathLike) -> None:
    """Per-shot mp4s (written once; later calls read them back instead of decoding again),
    the scene mp4 and the contact sheet (accepted shots, then the pending one if any)."""
    out = Path(out_dir)
    frames, captions = [], []
    for i, shot in enumerate(pool.shots):
        video = accepted_frames(kit, shot, out / f"shot_{i:03d}.mp4")
        frames.append(video)
        captions.append(caption(i, shot))
    if frames:
        write_mp4(out / SCENE_VIDEO, scene_frames(frames, kit.fps), kit.fps)
        write_manifest(out, [eval_manifest_row(pool, out)])
    if pool.pending is not None:
        video = decode(kit, pool.pending)
        write_mp4(out / PENDING_VIDEO, video, kit.fps)
        frames.append(video)
        captions.append(caption("pending", pool.pending))
    elif (out / PENDING_VIDEO).exists():
        (out / PENDING_VIDEO).unlink()
    if frames:
        write_contact_sheet(out / CONTACT_SHEET, frames, captions)
