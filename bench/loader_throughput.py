"""Loader throughput (scenes/s, tokens/s) and packing efficiency on the synthetic scene set.

    python bench/loader_throughput.py                       # defaults: 64 scenes, 64x64
    python bench/loader_throughput.py --workers 0 2 --max-tokens 16384 --lookahead 1 16

Renders (once, cached under --work-dir) a synth set, builds shards with the pixel codec and the
MiniLM text encoder, then times SceneLoader for each (workers, lookahead) pair. Prints one JSON
line per configuration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from data_tools.build import BuildConfig, build
from data_tools.synth import SynthConfig, write_synth
from lct_train.data.config import DataConfig
from lct_train.data.loader import SceneLoader

WARMUP_BATCHES = 3


def prepare(work: Path, scenes: int, size: int, text_encoder: str, workers: int) -> Path:
    synth, ds = work / "synth", work / "ds"
    if not (synth / "manifest.jsonl").is_file():
        write_synth(
            SynthConfig(num_scenes=scenes, height=size, width=size, max_shots=5, max_frames=8),
            synth,
        )
    if not (ds / "dataset.json").is_file() or len(list((ds / "shards").glob("*.tar"))) * 8 < scenes:
        t = time.perf_counter()
        summary = build(
            BuildConfig(
                str(synth / "manifest.jsonl"),
                str(ds),
                vae="pixel:2",
                text_encoder=text_encoder,
                area=size * size,
                scenes_per_shard=8,
                workers=workers,
            )
        )
        print(json.dumps({"build": summary, "wall_s": round(time.perf_counter() - t, 2)}))
    return ds


def measure(ds: Path, workers: int, lookahead: int, max_tokens: int, batches: int) -> dict:
    cfg = DataConfig(
        sources=[{"path": str(ds)}],
        max_tokens=max_tokens,
        num_workers=workers,
        packing_lookahead=lookahead,
        shuffle_buffer=16,
        p_image=0.1,
    )
    loader = SceneLoader(cfg)
    it = iter(loader)
    for _ in range(WARMUP_BATCHES):
        next(it)
    scenes = tokens = 0
    t = time.perf_counter()
    for b in itertools.islice(it, batches):
        scenes += len(b.keys)
        tokens += b.num_tokens
    dt = time.perf_counter() - t
    return {
        "workers": workers,
        "lookahead": lookahead,
        "max_tokens": max_tokens,
        "batches": batches,
        "scenes_per_s": round(scenes / dt, 1),
        "tokens_per_s": round(tokens / dt),
        "batches_per_s": round(batches / dt, 2),
        "packing_efficiency": round(tokens / (batches * max_tokens), 4),
        "skipped_over_budget": loader.counters()["loader/skipped_over_budget"],
        "truncated": loader.counters()["loader/truncated"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work-dir", default="/tmp/lct-bench-loader")
    p.add_argument("--scenes", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("--build-workers", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--lookahead", type=int, nargs="+", default=[1, 16])
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--batches", type=int, default=60)
    args = p.parse_args()
    ds = prepare(Path(args.work_dir), args.scenes, args.size, args.text_encoder, args.build_workers)
    for workers, lookahead in itertools.product(args.workers, args.lookahead):
        print(json.dumps(measure(ds, workers, lookahead, args.max_tokens, args.batches)))


if __name__ == "__main__":
    main()
