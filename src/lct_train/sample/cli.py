"""``lct-sample``: generate a scene from a scene file, or direct one shot at a time.

Commands::

    lct-sample scene SCENE.yaml [SCENE2.yaml ...] --ckpt CKPT --codec pixel --text-encoder minilm --out DIR
        all modes (joint / conditioned / ar / ar-kv, set in the scene file). DIR gets per-shot
        latents + mp4s, scene.mp4, contact_sheet.png and manifest.jsonl (lct-eval's input),
        and is a history pool (pool.json), so the interactive commands below can continue it.
        Several scene files share one loaded model: each goes to DIR/<key or file name>/ and
        DIR/manifest.jsonl lists them all.
    lct-sample init --pool DIR --global-prompt TEXT --ckpt CKPT --codec ... --text-encoder ...
        [--size F,H,W] [--steps N] [--guidance G] [--t-c T] ...   start an empty pool; the
        model, codec, encoder and sampling settings are stored and reused by later calls.
    lct-sample add --pool DIR --condition FILE --prompt TEXT     accept a given shot (image =
        1-frame shot for compositional generation, video, or .safetensors latent)
    lct-sample shot --pool DIR --prompt TEXT [--context 0,2] [--seed N] [--size F,H,W]
        [--no-cut] [--mode ar|ar-kv]     generate the next shot from the chosen earlier shots
        (default: the latest window-1) -> DIR/pending.mp4 and contact_sheet.png (not accepted)
    lct-sample regenerate --pool DIR [--seed N] [--prompt TEXT] [--context ...]
        redo the pending shot (default: same prompt and context, seed + 1)
    lct-sample accept --pool DIR      the pending shot joins the pool (index = len(pool))
    lct-sample show --pool DIR        list the pool

``--sp N`` (scene, shot, regenerate): Ulysses sequence parallelism over N ranks under
``torchrun --nproc_per_node=N -m lct_train.sample.cli ...``; same latents as one process,
rank 0 writes.

``--no-cut`` writes the prompt without the "[SHOT CUT] " marker: shot extension. Any model
option given to a pool command overrides the stored one for that call only.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import NoReturn

from lct_train.core import exits
from lct_train.core.dtypes import SAMPLE_DTYPES
from lct_train.data.codecs import CODEC_HELP
from lct_train.data.schema import shot_prompt
from lct_train.data.text_encoders import TEXT_ENCODER_HELP
from lct_train.model.layout import MASKS
from lct_train.sample import scene_file
from lct_train.sample.checkpoint_io import WEIGHT_SETS, CheckpointError
from lct_train.sample.history_pool import HistoryPool, PoolError
from lct_train.sample.interactive import add_given, propose_shot
from lct_train.sample.media import MediaError
from lct_train.sample.modes import AR, AR_KV, AR_MODES, MODES
from lct_train.sample.pipeline import (
    Toolkit,
    caption,
    prepare_scene,
    render_pool,
    run_scene,
    settings_of,
    write_scenes_manifest,
)
from lct_train.sample.sampler import SETTING_NAMES, SamplingError, resolve_settings
from lct_train.sample.scene_file import SceneFileError, ShotSize, load_scene_file
from lct_train.sample.toolkit import load_toolkit
from lct_train.sample.writers import DEFAULT_FPS

MODEL_OPTIONS = ("ckpt", "lora", "lora_scale", "weights", "mask", "window", "pipeline", "codec",
                 "text_encoder", "device", "dtype", "vae_dtype", "fps")
SAMPLING_OPTIONS = SETTING_NAMES
MODEL_DEFAULTS = {"device": "cpu", "dtype": "float32", "fps": DEFAULT_FPS, "lora_scale": 1.0}
ERRORS = (SceneFileError, SamplingError, PoolError, CheckpointError, MediaError)


def _size(text: str) -> ShotSize:
    try:
        frames, height, width = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be F,H,W (pixels), got {text!r}") from exc
    return ShotSize(frames, height, width)


def _indices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"context must be indices like 0,2, got {text!r}") from exc


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (stored in the pool by init/scene)")
    g.add_argument("--ckpt", help="model.safetensors (+config.json), a DCP step-N or a run directory")
    g.add_argument("--lora", help="a diffusers LoRA file (lct-convert export-lora) merged "
                   "into the --ckpt weights at load")
    g.add_argument("--lora-scale", dest="lora_scale", type=float,
                   help="strength of --lora (default 1)")
    g.add_argument("--weights", choices=WEIGHT_SETS,
                   help="DCP weights to load (default ema, or model when it has no EMA)")
    g.add_argument("--mask", choices=MASKS,
                   help="attention mask the model was trained with (DCP: read from lct_meta)")
    g.add_argument("--window", type=int, help="most shots per forward (default: checkpoint/9)")
    g.add_argument("--pipeline", metavar="DIR",
                   help="diffusers HunyuanVideoPipeline or WanPipeline folder (model_index.json): "
                        "its vae/ as the codec and its text encoders (Llama + CLIP-L, or umT5; as "
                        "diffusers encodes), the text encoders in the model's --dtype, the VAE in "
                        "--vae-dtype; --codec / --text-encoder override a part")
    g.add_argument("--codec", help=CODEC_HELP)
    g.add_argument("--text-encoder", dest="text_encoder", help=TEXT_ENCODER_HELP)
    g.add_argument("--device", help="cpu | cuda (default cpu)")
    g.add_argument("--dtype", choices=sorted(SAMPLE_DTYPES), help="model dtype (default float32)")
    g.add_argument("--vae-dtype", dest="vae_dtype", choices=sorted(SAMPLE_DTYPES),
                   help="--pipeline's VAE dtype (default: the pipeline's own, float32 for Wan as "
                        "diffusers' and the official Wan code run it; HunyuanVideo: --dtype)")
    g.add_argument("--fps", type=int, help=f"mp4 frame rate (default {DEFAULT_FPS})")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    s = p.add_argument_group(
        "sampling (override the scene file / the pool; unset: the model preset's value, e.g. "
        "hunyuan-video: steps 50, guidance 1, embedded guidance 6, shift 7; wan: steps 50, "
        "guidance 5, its negative prompt; else the default)")
    s.add_argument("--steps", type=int, help="Euler steps (default 30)")
    s.add_argument("--guidance", type=float, help="CFG scale on the text (1 = off; default 5)")
    s.add_argument("--embedded-guidance", dest="embedded_guidance", type=float,
                   help="value of the guidance embedding (models that have one)")
    s.add_argument("--t-c", dest="t_c", type=float, help="conditioning timestep in [0, 1)")
    s.add_argument("--shift", type=float, help="timestep shift (default: resolution rule)")
    s.add_argument("--negative-prompt", dest="negative_prompt",
                   help="text of the guidance's uncond branch (default: the preset's, e.g. Wan's "
                        "official one, else the empty prompt; '' = the empty prompt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lct-sample", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scene", help="generate a whole scene file (format: scene --help)",
                       description=scene_file.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene_files", nargs="+", metavar="scene_file")
    p.add_argument("--out", required=True, help="output folder (a history pool; with several "
                   "scene files, one sub-folder per scene and the manifest of all)")
    p.add_argument("--mode", choices=MODES, help="override the scene's mode")
    _model_args(p)
    _sp_arg(p)
    p = sub.add_parser("init", help="start an empty history pool")
    p.add_argument("--pool", required=True)
    p.add_argument("--global-prompt", dest="global_prompt",
                   help="the scene's global prompt (none: no global group)")
    p.add_argument("--size", type=_size, help="default shot size F,H,W in pixels")
    _model_args(p)
    p = sub.add_parser("add", help="accept a given shot (image / video / latent)")
    p.add_argument("--pool", required=True)
    p.add_argument("--condition", required=True)
    _shot_args(p, prompt_required=True)
    p = sub.add_parser("shot", help="generate the next shot (pending until accepted)")
    p.add_argument("--pool", required=True)
    p.add_argument("--context", type=_indices, help="earlier shot indices, e.g. 0,2")
    p.add_argument("--mode", choices=AR_MODES, help="default ar-kv for causal models, else ar")
    _shot_args(p, prompt_required=True)
    _sp_arg(p)
    p = sub.add_parser("regenerate", help="redo the pending shot with another seed / prompt")
    p.add_argument("--pool", required=True)
    p.add_argument("--context", type=_indices)
    p.add_argument("--mode", choices=AR_MODES)
    _shot_args(p, prompt_required=False)
    _sp_arg(p)
    p = sub.add_parser("accept", help="accept the pending shot")
    p.add_argument("--pool", required=True)
    p.add_argument("--no-render", action="store_true", help="skip rewriting videos")
    _model_args(p)
    p = sub.add_parser("show", help="list the pool")
    p.add_argument("--pool", required=True)
    return parser


def _shot_args(p: argparse.ArgumentParser, prompt_required: bool) -> None:
    p.add_argument("--prompt", required=prompt_required, help="the shot's event prompt")
    p.add_argument("--no-cut", action="store_true", help="no [SHOT CUT] marker (extension)")
    p.add_argument("--seed", type=int)
    p.add_argument("--size", type=_size, help="shot size F,H,W in pixels")
    _model_args(p)


def _options(args: argparse.Namespace, stored: dict, names, defaults: dict) -> dict:
    out = {k: stored.get(k, defaults.get(k)) for k in names}
    out.update({k: getattr(args, k) for k in names if getattr(args, k, None) is not None})
    return out


def _sp_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sp", type=int, default=1,
                   help="sequence-parallel ranks per scene: run under torchrun "
                        "--nproc_per_node=N (divides the model's heads); rank 0 writes")


def _cmd_scene(args) -> None:
    overrides = {k: getattr(args, k) for k in (*SAMPLING_OPTIONS, "mode")
                 if getattr(args, k, None) is not None}
    # every file is read (before the model loads), checked against the model and its media
    # encoded before anything is generated or written
    requests = [replace(load_scene_file(path), **overrides) for path in args.scene_files]
    folders = _scene_folders(args.out, args.scene_files, requests)
    model_opts = _options(args, {}, MODEL_OPTIONS, MODEL_DEFAULTS)
    kit = load_toolkit(model_opts, not args.no_progress, args.sp)
    plans = [prepare_scene(request, kit) for request in requests]
    written = []
    for request, folder, planned in zip(requests, folders, plans):
        # the settings the scene ran with (preset values filled in), reused by later shots
        settings = dict(model_opts, **asdict(settings_of(request, kit.loaded)))
        if request.key is not None:
            settings["key"] = request.key  # lct-eval's manifest names the scene it follows
        sizes = [s.size for s in request.shots if s.size is not None]
        if sizes:
            settings["size"] = [sizes[-1].frames, sizes[-1].height, sizes[-1].width]
        written.append((folder, run_scene(request, kit, folder, settings=settings,
                                          planned=planned)))
        if kit.writes:
            print(f"wrote {len(request.shots)} shots to {folder}")
    if kit.writes and len(folders) > 1:
        write_scenes_manifest(args.out, written)


def _scene_folders(out: str, files: list[str], requests: list) -> list[Path]:
    """``[out]`` for one scene; else ``out/<key or file stem>`` per scene (names unique)."""
    if len(files) == 1:
        return [Path(out)]
    names = [r.key or Path(f).stem for f, r in zip(files, requests)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SceneFileError(f"two scene files name the output folder {repeated[0]!r} (same "
                             "key or file name): each scene needs its own")
    return [Path(out) / name for name in names]


def _cmd_init(args) -> None:
    if HistoryPool.exists(args.pool):
        raise PoolError(f"{args.pool} already holds a pool")
    settings = _options(args, {}, MODEL_OPTIONS, MODEL_DEFAULTS)
    settings.update(_options(args, {}, SAMPLING_OPTIONS, {}))  # unset: the preset's at each call
    if args.size is not None:
        settings["size"] = [args.size.frames, args.size.height, args.size.width]
    HistoryPool(global_prompt=args.global_prompt, settings=settings).save(args.pool)
    print(f"initialised pool {args.pool}")


def _load(args) -> tuple[HistoryPool, dict]:
    pool = HistoryPool.load(args.pool)
    opts = _options(args, pool.settings, MODEL_OPTIONS, MODEL_DEFAULTS)
    return pool, opts


def _shot_size(args, pool: HistoryPool, fallback: ShotSize | None = None) -> ShotSize | None:
    if args.size is not None:
        return args.size
    if fallback is not None:
        return fallback
    stored = pool.settings.get("size")
    return ShotSize(*stored) if stored else None


def _cmd_add(args) -> None:
    pool, opts = _load(args)
    kit = load_toolkit(opts, not args.no_progress)
    seed = args.seed if args.seed is not None else len(pool)
    index = add_given(pool, kit, condition=args.condition, seed=seed,
                      prompt=shot_prompt(args.prompt, not args.no_cut),
                      size=_shot_size(args, pool))
    pool.save(args.pool)
    render_pool(pool, kit, args.pool)
    print(f"added given shot #{index} from {args.condition}")


def _cmd_shot(args, regenerate: bool = False) -> None:
    pool, opts = _load(args)
    previous = pool.pending
    if regenerate and previous is None:
        raise PoolError(f"{args.pool} has no pending shot to regenerate")
    kit = load_toolkit(opts, not args.no_progress, args.sp)
    prompt = shot_prompt(args.prompt, not args.no_cut) if args.prompt is not None else None
    fallback = None
    if regenerate:
        prompt = prompt or previous.prompt
        seed = args.seed if args.seed is not None else previous.seed + 1
        context = args.context if args.context is not None else previous.context
        mode = args.mode or previous.mode
        fallback = _size_of_latent(kit, previous.latent.shape)
    else:
        seed = args.seed if args.seed is not None else len(pool)
        context = args.context
        mode = args.mode or (AR_KV if kit.loaded.mask == "causal" else AR)
    size = _shot_size(args, pool, fallback)
    if size is None:
        raise SamplingError("no shot size: pass --size F,H,W or init the pool with --size")
    settings = resolve_settings(_options(args, pool.settings, SAMPLING_OPTIONS, {}),
                                kit.loaded.config.sampling)
    shot = propose_shot(pool, kit, settings, prompt=prompt, seed=seed, size=size,
                        context=context, mode=mode)
    if not kit.writes:
        return
    pool.save(args.pool)
    render_pool(pool, kit, args.pool)
    print(f"pending: {caption('pending', shot)} -> {Path(args.pool) / 'pending.mp4'}")


def _size_of_latent(kit: Toolkit, shape) -> ShotSize:
    """Pixel size of a latent (inverse of ``media.latent_shape``)."""
    codec = kit.codec
    _, f, h, w = shape
    return ShotSize(codec.pixel_frames(f), h * codec.spatial_factor, w * codec.spatial_factor)


def _cmd_accept(args) -> None:
    pool, opts = _load(args)
    index = pool.accept()
    pool.save(args.pool)
    if not args.no_render:
        render_pool(pool, load_toolkit(opts, False), args.pool)
    print(f"accepted shot #{index}")


def _cmd_show(args) -> None:
    pool = HistoryPool.load(args.pool)
    print(f"global: {pool.global_prompt}")
    for i, shot in enumerate(pool.shots):
        print(caption(i, shot), tuple(shot.latent.shape))
    if pool.pending is not None:
        print(caption("pending", pool.pending), tuple(pool.pending.latent.shape))


COMMANDS = {
    "scene": _cmd_scene, "init": _cmd_init, "add": _cmd_add, "shot": _cmd_shot,
    "regenerate": lambda a: _cmd_shot(a, regenerate=True), "accept": _cmd_accept,
    "show": _cmd_show,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    done = False
    try:
        COMMANDS[args.command](args)
        done = True
    except ERRORS as exc:  # checked alike on every rank: under --sp said once, not per rank
        return exits.refuse(f"lct-sample {args.command}: error: {exc}", say=rank == 0)
    except Exception as exc:  # the environment or a peer rank: one line; a bug: its traceback
        return exits.refuse_fault(f"lct-sample {args.command}: rank {rank}", exc)
    finally:
        if getattr(args, "sp", 1) > 1:
            from lct_train.parallel.dist import shutdown

            shutdown(synchronize=done)
    return exits.OK


def cli() -> NoReturn:
    """``lct-sample`` and ``python -m lct_train.sample.cli``: `main`, then the process ends
    without the interpreter's finalisation (`lct_train.parallel.dist.end_process`): under
    ``--sp`` it ran collectives."""
    from lct_train.parallel.dist import run_then_end

    run_then_end(main)


if __name__ == "__main__":
    cli()
