"""Loader throughput (scenes/s, tokens/s) and packing efficiency on the synthetic scene set.

    python bench/loader_throughput.py                       # defaults: 64 scenes, 64x64
    python bench/loader_throughput.py --workers 0 2 --max-tokens 16384 --lookahead 1 16
    python bench/loader_throughput.py --train-model none    # loader only

Renders (once, cached under --work-dir) a synth set, builds shards with the pixel codec and the
MiniLM text encoder, then times SceneLoader for each (workers, lookahead) pair. Prints one JSON
line per configuration.

With --train-model NAME (default small) it then times the training step those batches feed, in
the same run: ``LCTModel`` from conf/model/NAME.yaml with the dataset's geometry, forward +
per-shot loss + backward + AdamW on the first batches the reference loader configuration
produced (the DataConfig defaults when measured, else the last pair). Prints one more JSON line
with train tokens/s and ``loader_over_train`` (target: >= 10).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from data_tools.build import BuildConfig, build
from data_tools.synth import SynthConfig, write_synth
from lct_train.data.config import DataConfig
from lct_train.data.loader import SceneLoader
from lct_train.data.packing import PackedScenes
from lct_train.data.schema import GEOMETRY_KEYS, DatasetInfo
from lct_train.model import LCTModel
from lct_train.model.config import ModelConfig
from lct_train.model.init import init_weights
from lct_train.model.layout import build_packed_meta
from lct_train.train.loss import micro_generator, noise_batch, shot_losses

WARMUP_BATCHES = 3
MODEL_CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
TRAIN_WARMUP_BATCHES = 2
TRAIN_TIMED_BATCHES = 4
TRAIN_LR = 1.0e-4  # conf/optim/adamw.yaml
TIMESTEP_MEAN, TIMESTEP_STD = 0.0, 1.0  # the loss defaults (logit-normal t per shot)
SEED = 0
LOADER_TARGET_RATIO = 10.0


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


def measure(
    ds: Path,
    workers: int,
    lookahead: int,
    max_tokens: int,
    batches: int,
    model: ModelConfig | None = None,
    keep: list[PackedScenes] | None = None,
    keep_count: int = 0,
) -> dict:
    """Times the loader; appends its first ``keep_count`` batches to ``keep`` when given."""
    shape = (
        {} if model is None else {"patch_size": model.patch_size, "dummy_grid": model.dummy_grid}
    )
    cfg = DataConfig(
        sources=[{"path": str(ds)}],
        max_tokens=max_tokens,
        num_workers=workers,
        packing_lookahead=lookahead,
        shuffle_buffer=16,
        p_image=0.1,
        **shape,
    )
    loader = SceneLoader(cfg)
    it = iter(loader)
    kept = keep if keep is not None else []
    for _ in range(WARMUP_BATCHES):
        b = next(it)
        if len(kept) < keep_count:
            kept.append(b)
    scenes = tokens = 0
    t = time.perf_counter()
    for b in itertools.islice(it, batches):
        if len(kept) < keep_count:
            kept.append(b)
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


def model_config(name: str, ds: Path) -> ModelConfig:
    """The preset ``conf/model/<name>.yaml`` with the dataset's tensor geometry."""
    info = DatasetInfo.read(ds)
    cfg = ModelConfig.from_yaml(MODEL_CONF_DIR / f"{name}.yaml")
    return replace(cfg, **{k: getattr(info, k) for k in GEOMETRY_KEYS})


def train_step_throughput(cfg: ModelConfig, batches: list[PackedScenes], warmup: int) -> dict:
    """Forward + per-shot loss + backward + AdamW step on ``batches`` (fp32, CPU)."""
    gen = torch.Generator().manual_seed(SEED)
    model = LCTModel(cfg)
    init_weights(model, gen)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR)
    device = torch.device("cpu")
    scenes = tokens = 0
    t = time.perf_counter()
    for i, mb in enumerate(batches):
        if i == warmup:
            scenes = tokens = 0
            t = time.perf_counter()
        meta = build_packed_meta(mb.specs, mask="bidirectional", text_rope=cfg.text_rope)
        noised = noise_batch(
            mb.video.float(),
            meta,
            micro_generator(device, SEED, i, 0),
            mean=TIMESTEP_MEAN,
            std=TIMESTEP_STD,
        )
        pred = model(noised.z_t, mb.text.float(), mb.pooled.float(), noised.t_group, meta)
        shot_losses(pred, noised.target, meta).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        scenes += len(mb.keys)
        tokens += mb.num_tokens
    dt = time.perf_counter() - t
    timed = len(batches) - warmup
    return {
        "train_batches": timed,
        "train_warmup": warmup,
        "train_params": sum(p.numel() for p in model.parameters()),
        "train_s_per_step": round(dt / timed, 3),
        "train_tokens_per_s": round(tokens / dt),
        "train_scenes_per_s": round(scenes / dt, 2),
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
    p.add_argument(
        "--train-model",
        default="small",
        help="conf/model preset whose training step is timed; 'none' to skip",
    )
    p.add_argument("--train-batches", type=int, default=TRAIN_TIMED_BATCHES)
    p.add_argument("--train-warmup", type=int, default=TRAIN_WARMUP_BATCHES)
    args = p.parse_args()
    ds = prepare(Path(args.work_dir), args.scenes, args.size, args.text_encoder, args.build_workers)
    model = None if args.train_model == "none" else model_config(args.train_model, ds)
    pairs = list(itertools.product(args.workers, args.lookahead))
    default = DataConfig(sources=[{"path": str(ds)}])
    ref = (default.num_workers, default.packing_lookahead)
    ref = ref if ref in pairs else pairs[-1]
    kept: list[PackedScenes] = []
    keep_count = args.train_warmup + args.train_batches
    ref_row = None
    for workers, lookahead in pairs:
        is_ref = model is not None and (workers, lookahead) == ref
        row = measure(
            ds,
            workers,
            lookahead,
            args.max_tokens,
            args.batches,
            model,
            kept if is_ref else None,
            keep_count if is_ref else 0,
        )
        ref_row = row if is_ref else ref_row
        print(json.dumps(row))
    if model is None or ref_row is None:
        return
    train = train_step_throughput(model, kept, min(args.train_warmup, len(kept) - 1))
    ratio = ref_row["tokens_per_s"] / train["train_tokens_per_s"]
    print(
        json.dumps(
            {
                "train_model": args.train_model,
                "loader_workers": ref[0],
                "loader_lookahead": ref[1],
                "loader_tokens_per_s": ref_row["tokens_per_s"],
                "loader_scenes_per_s": ref_row["scenes_per_s"],
                **train,
                "loader_over_train": round(ratio, 1),
                "meets_target": ratio >= LOADER_TARGET_RATIO,
            }
        )
    )


if __name__ == "__main__":
    main()
