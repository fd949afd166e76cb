"""``lct-shards build``: manifest -> encoded webdataset shards, parallel and resumable.

The manifest is cut into fixed *chunks* of ``scenes_per_shard`` scenes. Chunk ``c`` belongs to
global worker ``c % (world_size * workers)`` (torchrun rank x local worker process), so ranks and
workers write disjoint shards. A chunk writes ``shards/<c>-<part>.tar.tmp`` parts (rolled over at
``shard_size_mb``), renames them when the chunk is complete, then writes
``shards/.done/<c>.json``; a re-run skips chunks with a marker and rebuilds the others.
A scene that fails to decode or encode is logged and left out (listed in the marker). A scene's
shots of one frame shape are VAE-encoded together, at most ``encode_frames`` frames per call.

Devices: under torchrun each rank encodes on its own GPU (``--device cuda`` means
``cuda:LOCAL_RANK``, ``rank_device``). Worker processes (``--workers > 1``) are *spawned*, never
forked (a forked child cannot use CUDA once the parent touched it), and each builds its own
encoders on the rank's device.

Encoders: ``--pipeline DIR`` loads the VAE and text encoders of a diffusers pipeline folder
(``lct_train.data.pipeline_dir``); ``--vae`` / ``--text-encoder`` give a part separately (and
override the pipeline's). ``--dtype`` is their weights' dtype (``auto``: bf16 on CUDA, fp32 on
CPU), except a pipeline VAE whose family declares its own (Wan's: fp32); ``--vae-dtype`` names
the pipeline VAE's explicitly. ``--model`` checks them against the model the shards are for before anything is encoded
or written (``model_fit``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from data_tools.manifest import PLACEHOLDER, SceneEntry, placeholder_prompts, read_manifest
from data_tools.model_fit import check_model_fit, read_model
from data_tools.scene_encoder import FrameSpec, encode_prompts, encode_scene_entry
from data_tools.shard_writer import ChunkWriter, remove_chunk
from lct_train.core.dtypes import dtype_of
from lct_train.core.files import write_atomic
from lct_train.data.codecs import build_codec
from lct_train.data.schema import CHECKSUM_KIND, SHARDS_DIR, DatasetInfo, save_empty_prompt
from lct_train.data.text_encoders import build_text_encoder

logger = logging.getLogger(__name__)
DONE_DIR = ".done"
BYTES_PER_MB = 1 << 20
PROGRESS_INTERVAL_S = 0.5
WORKER_START_METHOD = "spawn"
# = the frames diffusers' HunyuanVideo VAE holds at once when it encodes a long shot in temporal
# tiles (tile_sample_min_num_frames): a batched call never holds more than a tiled long shot
DEFAULT_ENCODE_FRAMES = 16
DEFAULT_VAE = "pixel:2"
DEFAULT_TEXT_ENCODER = "minilm"
ENCODER_DTYPES = ("auto", "fp32", "bf16", "fp16")
VAE_DTYPES = ENCODER_DTYPES[1:]


@dataclass
class BuildConfig:
    manifest: str
    out: str
    vae: str | None = None  # None: the pipeline's vae/, else DEFAULT_VAE
    text_encoder: str | None = None  # None: the pipeline's text encoders, else DEFAULT_TEXT_ENCODER
    fps: float = 8.0
    area: int = 64 * 64
    patch: int = 2  # model spatial patch: sizes are multiples of spatial_factor * patch
    max_frames: int | None = None
    scenes_per_shard: int = 64
    shard_size_mb: float = 512.0
    workers: int = 1  # processes per rank
    device: str = "cpu"
    allow_placeholder_prompts: bool = False  # build scenes whose prompts are split's TODOs
    encode_frames: int = DEFAULT_ENCODE_FRAMES  # most frames per VAE call (a longer shot: alone)
    pipeline: str | None = None  # diffusers pipeline folder: its VAE and text encoders
    model: str | None = None  # preset name or export folder the encoders must fit
    dtype: str = "auto"  # VAE and text encoder weights (auto: bf16 on CUDA, fp32 on CPU)
    vae_dtype: str | None = None  # the pipeline VAE's (None: its family's, fp32 for Wan, else dtype)

    def __post_init__(self):
        if self.encode_frames < 1:
            raise ValueError(f"--encode-frames (encode_frames) must be a frame count >= 1, "
                             f"got {self.encode_frames}")
        if self.dtype not in ENCODER_DTYPES:
            raise ValueError(f"--dtype (dtype) must be one of {', '.join(ENCODER_DTYPES)}, got {self.dtype!r}")
        if self.vae_dtype not in (None, *VAE_DTYPES):
            raise ValueError(f"--vae-dtype (vae_dtype) must be one of {', '.join(VAE_DTYPES)}, "
                             f"got {self.vae_dtype!r}")

    def encoder_dtype(self):
        if self.dtype == "auto":
            return dtype_of("bf16" if self.device.startswith("cuda") else "fp32")
        return dtype_of(self.dtype)

    def encoder_names(self) -> tuple[str, str]:
        """How the codec and the text encoder were given (for messages)."""
        def named(flag: str, value: str | None, default: str, part: str) -> str:
            if value:
                return f"{flag} {value}"
            return f"--pipeline {self.pipeline} ({part})" if self.pipeline else f"{flag} {default}"

        return (named("--vae", self.vae, DEFAULT_VAE, "vae/"),
                named("--text-encoder", self.text_encoder, DEFAULT_TEXT_ENCODER, "text encoders"))


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank_device(device: str, local_rank: int | None = None) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` (torchrun's local rank; 0 alone); ``auto`` -> that when
    CUDA is available, else ``cpu``; an explicit ``cuda:N`` or ``cpu`` is kept."""
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{local_rank}" if device == "cuda" else device


def worker_context():
    """Spawned workers: each starts a fresh interpreter (no inherited CUDA state)."""
    return mp.get_context(WORKER_START_METHOD)


def _encoders(cfg: BuildConfig):
    """(codec, text encoder) on ``cfg.device`` in ``cfg.encoder_dtype()``."""
    dtype = cfg.encoder_dtype()
    text_encoder = codec = None
    if cfg.pipeline:
        from lct_train.data.pipeline_dir import load_pipeline

        text_encoder, codec = load_pipeline(cfg.pipeline, device=cfg.device, dtype=dtype,
                                            text_encoder=cfg.text_encoder is None, codec=cfg.vae is None,
                                            vae_dtype=dtype_of(cfg.vae_dtype) if cfg.vae_dtype else None)
    if codec is None:
        codec = build_codec(cfg.vae or DEFAULT_VAE, device=cfg.device, dtype=dtype)
    if text_encoder is None:
        text_encoder = build_text_encoder(cfg.text_encoder or DEFAULT_TEXT_ENCODER, device=cfg.device,
                                          dtype=dtype)
    return codec, text_encoder


def write_dataset_info(cfg: BuildConfig, codec, text_encoder) -> DatasetInfo:
    tokens, pooled = encode_prompts(text_encoder, [""])
    save_empty_prompt(cfg.out, tokens[0], pooled[0])
    info = DatasetInfo(
        vae=codec.spec(), text_encoder=text_encoder.spec(), latent_channels=codec.latent_channels,
        text_dim=text_encoder.text_dim, pooled_dim=text_encoder.pooled_dim,
        temporal_factor=codec.temporal_factor, spatial_factor=codec.spatial_factor,
        image_frame=codec.image_frame, fps=cfg.fps, area=cfg.area,
        extra={"scaling_factor": codec.scaling_factor, "patch": cfg.patch, "build": asdict(cfg)},
        member_checksums=CHECKSUM_KIND,
    )
    info.write(cfg.out)
    return info


def chunk_done(shard_dir: Path, chunk: int) -> bool:
    return (shard_dir / DONE_DIR / f"{chunk:06d}.json").is_file()


def build_chunk(cfg: BuildConfig, chunk: int, scenes: list[SceneEntry], codec, text_encoder, progress) -> dict:
    """Encodes one chunk's scenes into its shards; returns the marker written."""
    shard_dir = Path(cfg.out) / SHARDS_DIR
    remove_chunk(shard_dir, chunk)
    spec = FrameSpec(cfg.fps, cfg.area, codec.spatial_factor * cfg.patch, cfg.max_frames)
    writer = ChunkWriter(shard_dir, chunk, int(cfg.shard_size_mb * BYTES_PER_MB))
    failed = []
    for scene in scenes:
        try:
            writer.write(encode_scene_entry(scene, spec, codec, text_encoder, cfg.encode_frames))
        except Exception as exc:  # a broken video must not stop a long build
            logger.warning("scene %s failed, left out: %s: %s", scene.key, type(exc).__name__, exc)
            failed.append({"key": scene.key, "error": f"{type(exc).__name__}: {exc}"})
        progress(1)
    marker = {"chunk": chunk, "shards": writer.commit(), "scenes": writer.samples, "failed": failed}
    write_atomic(shard_dir / DONE_DIR / f"{chunk:06d}.json", json.dumps(marker))
    return marker


def _run_worker(cfg: BuildConfig, chunks: list[tuple[int, list[SceneEntry]]], counter) -> None:
    torch.set_num_threads(1)
    codec, text_encoder = _encoders(cfg)

    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    for chunk, scenes in chunks:
        build_chunk(cfg, chunk, scenes, codec, text_encoder, progress)


def _watch(procs: list, counter, total: int) -> None:
    with tqdm(total=total, unit="scene", desc="build", smoothing=0.1) as bar:
        while any(p.is_alive() for p in procs):
            bar.update(counter.value - bar.n)
            time.sleep(PROGRESS_INTERVAL_S)
        bar.update(counter.value - bar.n)
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} build worker(s) failed (exit codes {bad}); re-run to resume")


def refuse_placeholders(manifest: str, scenes: list[SceneEntry]) -> None:
    """``ValueError`` naming the first scenes whose prompts are still ``split``'s placeholders."""
    found = [(s.key, where) for s in scenes if (where := placeholder_prompts(s))]
    if found:
        named = "; ".join(f"scene {key}: {', '.join(where)}" for key, where in found[:3])
        more = f" (and {len(found) - 3} more scenes)" if len(found) > 3 else ""
        raise ValueError(f"{manifest}: placeholder {PLACEHOLDER} prompts left by lct-shards split "
                         f"in {named}{more}: caption them, or pass --allow-placeholder-prompts")


def build(cfg: BuildConfig) -> dict:
    """Builds (or resumes) the dataset; returns a summary."""
    rank, world = _dist()
    cfg = replace(cfg, device=rank_device(cfg.device))
    scenes = read_manifest(cfg.manifest)
    if not cfg.allow_placeholder_prompts:
        refuse_placeholders(cfg.manifest, scenes)
    workers = max(1, cfg.workers)
    # rank 0 needs the encoders for dataset.json, --model for its check; one process reuses them
    encoders = _encoders(cfg) if rank == 0 or workers == 1 or cfg.model else None
    if cfg.model:
        check_model_fit(read_model(cfg.model), cfg.model, encoders[0], cfg.encoder_names()[0],
                        encoders[1], cfg.encoder_names()[1], cfg.patch)
    shard_dir = Path(cfg.out) / SHARDS_DIR
    (shard_dir / DONE_DIR).mkdir(parents=True, exist_ok=True)
    slots = world * workers
    n_chunks = -(-len(scenes) // cfg.scenes_per_shard)
    mine: list[list[tuple[int, list[SceneEntry]]]] = [[] for _ in range(workers)]
    skipped = 0
    for c in range(n_chunks):
        if c % slots // workers != rank:
            continue
        if chunk_done(shard_dir, c):
            skipped += 1
            continue
        mine[c % slots % workers].append((c, scenes[c * cfg.scenes_per_shard : (c + 1) * cfg.scenes_per_shard]))
    todo = sum(len(s) for w in mine for _, s in w)
    logger.info("rank %d/%d: %d chunks to build, %d already done", rank, world, sum(map(len, mine)), skipped)
    if rank == 0:
        write_dataset_info(cfg, *encoders)
    if workers > 1:
        encoders = None  # the worker processes build their own
    start = time.perf_counter()
    if workers == 1:
        codec, text_encoder = encoders
        with tqdm(total=todo, unit="scene", desc="build", smoothing=0.1) as bar:
            for chunk, chunk_scenes in mine[0]:
                build_chunk(cfg, chunk, chunk_scenes, codec, text_encoder, bar.update)
    else:
        ctx = worker_context()
        counter = ctx.Value("i", 0)
        procs = [ctx.Process(target=_run_worker, args=(cfg, w, counter)) for w in mine if w]
        for p in procs:
            p.start()
        _watch(procs, counter, todo)
    elapsed = time.perf_counter() - start
    return {"rank": rank, "world_size": world, "device": cfg.device, "chunks": n_chunks, "skipped_done": skipped,
            "scenes_built": todo, "seconds": round(elapsed, 2),
            "scenes_per_s": round(todo / elapsed, 2) if elapsed > 0 else 0.0}
