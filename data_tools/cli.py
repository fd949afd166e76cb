"""``lct-shards``: build / split / synth / inspect / verify (see ``lct-shards <cmd> -h``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from data_tools.build import BuildConfig, build
from data_tools.inspect_shards import inspect_dataset, verify_dataset
from data_tools.split import DEFAULT_THRESHOLD, split_video
from data_tools.synth import SynthConfig, write_synth


def _triple(text: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in text.split(","))  # type: ignore[return-value]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lct-shards", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="encode a JSONL scene manifest into webdataset shards")
    b.add_argument("manifest")
    b.add_argument("out", help="dataset directory (shards/, dataset.json, empty_prompt.safetensors)")
    b.add_argument("--vae", default="pixel:2", help="pixel[:F] | tiny-hunyuan | hunyuan:PATH")
    b.add_argument("--text-encoder", default="minilm", help="minilm | tiny | hf:PATH")
    b.add_argument("--fps", type=float, default=8.0)
    b.add_argument("--area", type=int, default=64 * 64, help="target pixel area (paper: 230400 = 480x480)")
    b.add_argument("--patch", type=int, default=2, help="model spatial patch size")
    b.add_argument("--max-frames", type=int, default=None)
    b.add_argument("--scenes-per-shard", type=int, default=64)
    b.add_argument("--shard-size-mb", type=float, default=512.0)
    b.add_argument("--workers", type=int, default=1, help="processes per rank (torchrun adds ranks)")
    b.add_argument("--device", default="cpu")

    s = sub.add_parser("split", help="shot-detect a long video into a manifest skeleton")
    s.add_argument("video")
    s.add_argument("out_manifest")
    s.add_argument("--max-shots", type=int, default=9)
    s.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    s.add_argument("--min-scene-len", type=int, default=15, help="frames")

    y = sub.add_parser("synth", help="render a procedural multi-shot dataset (mp4 + manifest + gt)")
    y.add_argument("out")
    for name, field in SynthConfig.__dataclass_fields__.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(field.default, bool):  # --hidden / --no-hidden
            y.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            y.add_argument(flag, type=type(field.default), default=field.default)

    for name, text in (("inspect", "dataset statistics"), ("verify", "decode every sample")):
        q = sub.add_parser(name, help=text)
        q.add_argument("dataset")
        if name == "inspect":
            q.add_argument("--patch-size", type=_triple, default=(1, 2, 2))
            q.add_argument("--dummy-grid", type=_triple, default=(1, 1, 1))
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.cmd == "build":
        cfg = BuildConfig(args.manifest, args.out, args.vae, args.text_encoder, args.fps, args.area,
                          args.patch, args.max_frames, args.scenes_per_shard, args.shard_size_mb,
                          args.workers, args.device)
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
        print(json.dumps(inspect_dataset(args.dataset, args.patch_size, args.dummy_grid), indent=2))
    elif args.cmd == "verify":
        good, bad = verify_dataset(args.dataset)
        for shard, key, reason in bad:
            print(f"BAD {shard} {key}: {reason}")
        print(f"{good} good, {len(bad)} bad samples")
        return 1 if bad or good == 0 else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
