"""Cost of the per-sample integrity checks (member checksums, latent-magnitude bound) against the
loader's throughput, measured in one process on one dataset.

    python bench/sample_checks.py --dataset /tmp/lct-bench-loader/ds     # built by loader_throughput.py

Reads every sample's members into memory once, then times per sample (best of --repeats):
``check_members`` (the block-sum checksum of the three members), the latent bound (one ``abs().amax()`` per shot)
and the NaN/inf check it replaces, and the whole ``decode_scene``; then times ``SceneLoader``
(workers 0, the DataConfig defaults otherwise) over --batches batches. Prints one JSON line with
``checks_share_of_loader`` = (checksums + bound - replaced NaN check) per scene x loader scenes/s:
the fraction of the loader's time the checks add (target: <= 0.05).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
from safetensors.torch import load

from lct_train.data.config import DataConfig
from lct_train.data.loader import SceneLoader, list_shards
from lct_train.data.schema import (
    DEFAULT_MAX_LATENT_ABS,
    LATENTS_EXT,
    DatasetInfo,
    _bounded,
    _finite,
    check_members,
    decode_scene,
)
from lct_train.data.tario import MemberReader, index_shard


def samples(root: str) -> list[tuple[str, str, dict[str, bytes]]]:
    reader, out = MemberReader(), []
    for shard in list_shards(root):
        out += [(shard, ref.key, reader.read(ref)) for ref in index_shard(shard) if not ref.error]
    reader.close()
    return out


def per_sample(fn, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items)


def loader_scenes_per_s(root: str, batches: int, max_tokens: int) -> float:
    loader = SceneLoader(DataConfig(sources=[{"path": root}], num_workers=0, max_tokens=max_tokens))
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    scenes = sum(len(b.keys) for b in itertools.islice(it, batches))
    return scenes / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="a dataset built with member checksums")
    p.add_argument("--repeats", type=int, default=5, help="best of this many passes")
    p.add_argument("--batches", type=int, default=200, help="loader batches timed")
    p.add_argument("--max-tokens", type=int, default=16384, help="loader micro-batch budget")
    args = p.parse_args()
    torch.set_num_threads(1)
    info = DatasetInfo.read(args.dataset)
    items = samples(args.dataset)
    latents = [list(load(m[LATENTS_EXT]).values()) for _, _, m in items]
    crc = per_sample(lambda it: check_members(it[2], it[0], it[1], True), items, args.repeats)
    bound = per_sample(lambda zs: [_bounded("", "", "", z, DEFAULT_MAX_LATENT_ABS) for z in zs],
                       latents, args.repeats)
    finite = per_sample(lambda zs: [_finite("", "", "", z) for z in zs], latents, args.repeats)
    decode = per_sample(lambda it: decode_scene(it[2], it[0], it[1], info), items, args.repeats)
    rate = loader_scenes_per_s(args.dataset, args.batches, args.max_tokens)
    added = crc + bound - finite
    print(json.dumps({
        "samples": len(items), "member_mb_per_sample": round(
            sum(len(v) for _, _, m in items for v in m.values()) / len(items) / 2**20, 3),
        "checksums_us": round(crc * 1e6, 1), "bound_us": round(bound * 1e6, 1),
        "nan_check_us": round(finite * 1e6, 1), "decode_scene_us": round(decode * 1e6, 1),
        "loader_scenes_per_s": round(rate, 1), "checks_share_of_loader": round(added * rate, 4),
    }))


if __name__ == "__main__":
    main()
