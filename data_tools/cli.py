"""``lct-shards``: build / split / synth / inspect / verify (see ``lct-shards <cmd> -h``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_tools.build import (
    DEFAULT_ENCODE_FRAMES,
    DEFAULT_TEXT_ENCODER,
    DEFAULT_VAE,
    ENCODER_DTYPES,
    VAE_DTYPES,
    BuildConfig,
    build,
)
from data_tools.inspect_shards import format_summary, inspect_dataset, verify_dataset
from data_tools.model_fit import read_model
from data_tools.split import DEFAULT_THRESHOLD, split_video
from data_tools.synth import SynthConfig, write_synth
from lct_train.data.codecs import CODEC_HELP
from lct_train.data.config import DEFAULT_MAX_SHOTS
from lct_train.data.schema import DEFAULT_MAX_LATENT_ABS
from lct_train.data.text_encoders import TEXT_ENCODER_HELP

ERROR_STATUS = 2
# Help of the synth options (one per SynthConfig field).
SYNTH_HELP = {
    "num_scenes": "scenes to render",
    "min_shots": "fewest shots per scene",
    "max_shots": "most shots per scene",
    "min_frames": "fewest frames per shot",
    "max_frames": "most frames per shot",
    "height": "frame height in pixels (even)",
    "width": "frame width in pixels (even)",
    "fps": "frames per second of the rendered mp4s",
    "p_continuous": "share of scenes that are one continuous take split into segments",
    "max_characters": "most characters per scene",
    "seed": "random seed (the same seed renders the same set)",
    "hidden": "characters' colours, sizes, textures and the room's colour and pattern drawn "
              "per scene and named in no prompt (--no-hidden: named and prompted)",
}


def _triple(text: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in text.split(","))  # type: ignore[return-value]


def _sub(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text,
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lct-shards", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = _sub(sub, "build", "encode a JSONL scene manifest into webdataset scene shards")
    b.add_argument("manifest", help="JSONL manifest, one scene per line (see README: Data)")
    b.add_argument("out", help="dataset directory (shards/, dataset.json, empty_prompt.safetensors)")
    b.add_argument("--pipeline", metavar="DIR",
                   help="diffusers pipeline folder (model_index.json): a HunyuanVideoPipeline's "
                        "vae/ (hunyuan:) and its text_encoder/ + tokenizer/ (Llama) and "
                        "text_encoder_2/ + tokenizer_2/ (CLIP-L) as hunyuan-video:, or a "
                        "WanPipeline's vae/ (wan:, Wan2.1 or Wan2.2) and text_encoder/ + tokenizer/ "
                        "(umT5) as umt5:, each exactly as the diffusers pipeline encodes; --vae / "
                        "--text-encoder override a part")
    b.add_argument("--vae", help=CODEC_HELP + f"; None: {DEFAULT_VAE}, or the --pipeline's vae/")
    b.add_argument("--text-encoder",
                   help=TEXT_ENCODER_HELP + f"; None: {DEFAULT_TEXT_ENCODER}, or the --pipeline's")
    b.add_argument("--dtype", choices=ENCODER_DTYPES, default="auto",
                   help="weights of the VAE and the pipeline text encoders (hunyuan-video, umt5): "
                        "auto = bf16 on CUDA, "
                        "fp32 on CPU (latents and text are stored in fp32); a WanPipeline's VAE "
                        "stays fp32 (as diffusers and the official Wan code run it) unless --vae-dtype")
    b.add_argument("--vae-dtype", choices=VAE_DTYPES, default=None,
                   help="weights of the --pipeline's VAE (None: the pipeline's own, fp32 for Wan, "
                        "--dtype for HunyuanVideo)")
    b.add_argument("--model", metavar="NAME_OR_EXPORT_DIR",
                   help="model the shards are for: a conf/model preset (hunyuan-video, wan2.1-1.3b, "
                        "wan2.2-ti2v-5b, tiny, ...) or "
                        "an export folder with config.json; the encoders' latent channels, text and "
                        "pooled widths and --patch are checked against it before anything is encoded")
    b.add_argument("--fps", type=float, default=8.0, help="frames sampled per second of video")
    b.add_argument("--area", type=int, default=64 * 64,
                   help="target pixel area per frame, aspect kept (paper: 230400 = 480x480)")
    b.add_argument("--patch", type=int, default=2,
                   help="model spatial patch size (sizes are multiples of VAE factor x patch)")
    b.add_argument("--max-frames", type=int, default=None,
                   help="most frames per shot (None: no limit)")
    b.add_argument("--scenes-per-shard", type=int, default=64, help="scenes per build chunk")
    b.add_argument("--shard-size-mb", type=float, default=512.0,
                   help="a chunk's shard rolls over to a new part beyond this size")
    b.add_argument("--workers", type=int, default=1, help="processes per rank (torchrun adds ranks)")
    b.add_argument("--device", default="cpu", help="device of the VAE and text encoder")
    b.add_argument("--allow-placeholder-prompts", action="store_true",
                   help="build scenes whose prompts are still split's TODO placeholders")
    b.add_argument("--encode-frames", type=int, default=DEFAULT_ENCODE_FRAMES,
                   help="most frames per VAE call: a scene's shots of one frame shape are encoded "
                        "together up to this many frames (images: many per call); memory grows "
                        "with it. A longer shot is one call alone, its memory bounded by the VAE's "
                        "own temporal tiling (16 frames at a time for HunyuanVideo, the default)")

    s = _sub(sub, "split", "shot-detect a long video into a manifest skeleton (TODO prompts)")
    s.add_argument("video", help="the video file to cut into shots")
    s.add_argument("out_manifest", help="JSONL manifest to write")
    s.add_argument("--max-shots", type=int, default=DEFAULT_MAX_SHOTS, help="most shots per scene")
    s.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="PySceneDetect ContentDetector threshold")
    s.add_argument("--min-scene-len", type=int, default=15, help="shortest shot, in frames")

    y = _sub(sub, "synth", "render a procedural multi-shot dataset (mp4 + manifest + ground truth)")
    y.add_argument("out", help="output directory")
    for name, field in SynthConfig.__dataclass_fields__.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(field.default, bool):  # --hidden / --no-hidden
            y.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                           help=SYNTH_HELP[name])
        else:
            y.add_argument(flag, type=type(field.default), default=field.default,
                           help=SYNTH_HELP[name])

    q = _sub(sub, "inspect", "dataset statistics: counts, shot sizes, tokens-per-scene histogram")
    q.add_argument("dataset", help="dataset directory written by lct-shards build")
    q.add_argument("--model", help="count tokens as this model does: a preset name (wan2.1-1.3b, "
                                   "hunyuan-video, ...) or an export folder (its patch size and "
                                   "global-group dummy grid; overrides the two flags below)")
    q.add_argument("--patch-size", type=_triple, default=(1, 2, 2),
                   help="model patch pt,ph,pw used to count tokens")
    q.add_argument("--dummy-grid", type=_triple, default=(1, 1, 1),
                   help="model global-group dummy grid F,H,W used to count tokens (a Wan "
                        "model: 0,0,0, text only)")
    q.add_argument("--json", action="store_true", help="print the figures as JSON (for scripts)")

    v = _sub(sub, "verify", "decode and check every sample as the loader does; exit 1 if any is bad")
    v.add_argument("dataset", help="dataset directory written by lct-shards build")
    v.add_argument("--max-latent-abs", type=float, default=DEFAULT_MAX_LATENT_ABS,
                   help="a latent value beyond this makes a sample bad (data.max_latent_abs; 0: "
                        "only NaN/inf)")
    return p


def _run(args) -> int:
    if args.cmd == "build":
        cfg = BuildConfig(args.manifest, args.out, args.vae, args.text_encoder, args.fps, args.area,
                          args.patch, args.max_frames, args.scenes_per_shard, args.shard_size_mb,
                          args.workers, args.device, args.allow_placeholder_prompts, args.encode_frames,
                          args.pipeline, args.model, args.dtype, args.vae_dtype)
        print(json.dumps(build(cfg)))
    elif args.cmd == "split":
        scenes = split_video(args.video, args.out_manifest, max_shots=args.max_shots,
                             threshold=args.threshold, min_scene_len=args.min_scene_len)
        print(f"{sum(len(s['shots']) for s in scenes)} shots in {len(scenes)} scenes -> {args.out_manifest}")
    elif args.cmd == "synth":
        opts = {k: getattr(args, k) for k in SynthConfig.__dataclass_fields__}
        scenes = write_synth(SynthConfig(**opts), args.out)
        print(f"{len(scenes)} scenes -> {args.out}/manifest.jsonl")
    elif args.cmd == "inspect":
        patch, dummy = args.patch_size, args.dummy_grid
        if args.model:
            model = read_model(args.model)
            patch, dummy = model.patch_size, model.dummy_grid
        stats = inspect_dataset(args.dataset, patch, dummy)
        print(json.dumps(stats, indent=2) if args.json else format_summary(args.dataset, stats))
    elif args.cmd == "verify":
        good, bad = verify_dataset(args.dataset, args.max_latent_abs)
        for shard, key, reason in bad:
            print(f"BAD {shard} {key}: {reason}")
        print(f"{good} good, {len(bad)} bad samples")
        return 1 if bad or good == 0 else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as exc:  # bad manifest, paths, dataset: one line
        print(f"lct-shards {args.cmd}: error: {exc}", file=sys.stderr)
        return ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
