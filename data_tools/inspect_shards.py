"""``lct-shards inspect`` and ``verify``: dataset statistics, and a full decode of every sample.

``verify`` reads every member of every shard, decodes and validates each scene exactly as the
loader does, and lists each bad one as ``shard key: reason`` (the CLI exits non-zero).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch

from lct_train.data.loader import list_shards
from lct_train.data.schema import (
    DEFAULT_MAX_LATENT_ABS,
    META_EXT,
    BadSampleError,
    DatasetInfo,
    decode_scene,
)
from lct_train.data.tario import MemberReader, index_shard
from lct_train.model.geometry import scene_spec

HISTOGRAM_BINS = 10
BAR_WIDTH = 40


def iter_meta(root: str | Path):
    """``(shard, key, meta dict)`` for every sample whose json member parses."""
    reader = MemberReader()
    for shard in list_shards(root):
        for ref in index_shard(shard):
            if ref.error or META_EXT not in {m[0] for m in ref.members}:
                continue
            meta_ref = ref._replace(members=tuple(m for m in ref.members if m[0] == META_EXT))
            try:
                yield shard, ref.key, json.loads(reader.read(meta_ref)[META_EXT])
            except ValueError:
                continue
    reader.close()


def _histogram(values: list[int], bins: int = HISTOGRAM_BINS) -> list[tuple[int, int, int]]:
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    counts = Counter((v - lo) // width for v in values)
    return [(lo + b * width, lo + (b + 1) * width - 1, counts.get(b, 0)) for b in range(bins) if lo + b * width <= hi]


def inspect_dataset(root: str | Path, patch=(1, 2, 2), dummy_grid=(1, 1, 1)) -> dict:
    info = DatasetInfo.read(root)
    shards = list_shards(root)
    tokens, shots, frames, heights, widths, sources = [], [], [], [], [], Counter()
    for _, _, meta in iter_meta(root):
        shapes = [tuple(s) for s in meta["shapes"]]
        tokens.append(scene_spec(meta["text_lens"], shapes, patch, dummy_grid).num_tokens)
        shots.append(len(shapes))
        frames += [s[1] for s in shapes]
        heights += [s[2] for s in shapes]
        widths += [s[3] for s in shapes]
        sources[meta.get("source", "")] += 1
    if not tokens:
        raise ValueError(f"{root}: no readable samples in {len(shards)} shards")

    def stats(v):
        t = torch.tensor(v, dtype=torch.float64)
        return {"min": int(t.min()), "mean": round(float(t.mean()), 2), "max": int(t.max())}

    return {
        "shards": len(shards), "scenes": len(tokens), "shots": sum(shots), "sources": dict(sources),
        "encoders": {"vae": info.vae, "text": info.text_encoder},
        "shots_per_scene": stats(shots), "latent_frames": stats(frames),
        "latent_height": stats(heights), "latent_width": stats(widths),
        "tokens_per_scene": stats(tokens), "tokens_histogram": _histogram(tokens),
        "patch": list(patch), "dummy_grid": list(dummy_grid),
    }


def format_summary(root: str | Path, stats: dict, bar_width: int = BAR_WIDTH) -> str:
    """``inspect_dataset``'s figures as a readable report with a tokens-per-scene histogram."""

    def row(name: str, s: dict) -> str:
        return f"  {name:<18} min {s['min']:>7}   mean {s['mean']:>9}   max {s['max']:>7}"

    grid = "x".join(map(str, stats["patch"])), "x".join(map(str, stats["dummy_grid"]))
    sources = ", ".join(f"{k or '(none)'} {v}" for k, v in stats["sources"].items())
    lines = [f"{root}: {stats['shards']} shards, {stats['scenes']} scenes, {stats['shots']} shots"
             f" (sources: {sources})",
             f"  encoders: vae {stats['encoders']['vae']}, text {stats['encoders']['text']}",
             row("shots per scene", stats["shots_per_scene"]),
             row("latent frames", stats["latent_frames"]),
             row("latent height", stats["latent_height"]),
             row("latent width", stats["latent_width"]),
             row("tokens per scene", stats["tokens_per_scene"]),
             f"  tokens per scene (patch {grid[0]}, global dummy grid {grid[1]}):"]
    top = max(count for _, _, count in stats["tokens_histogram"])
    for lo, hi, count in stats["tokens_histogram"]:
        bar = "#" * round(bar_width * count / top) if top else ""
        lines.append(f"  {lo:>8}-{hi:<8} | {bar:<{bar_width}} {count}")
    return "\n".join(lines)


def verify_dataset(root: str | Path, max_latent_abs: float = DEFAULT_MAX_LATENT_ABS,
                   ) -> tuple[int, list[tuple[str, str, str]]]:
    """``(good sample count, [(shard, key, reason), ...])``; checks like the loader (member
    checksums, shapes, NaN/inf, ``|latent| <= max_latent_abs``)."""
    info = DatasetInfo.read(root)
    shards = list_shards(root)
    if not shards:
        return 0, [(str(Path(root)), "-", "no shards")]
    reader, good, bad = MemberReader(), 0, []
    for shard in shards:
        for ref in index_shard(shard):
            if ref.error:
                bad.append((shard, ref.key, ref.error))
                continue
            try:
                decode_scene(reader.read(ref), shard, ref.key, info, max_latent_abs)
                good += 1
            except BadSampleError as exc:
                bad.append((shard, ref.key, exc.reason))
    reader.close()
    return good, bad
