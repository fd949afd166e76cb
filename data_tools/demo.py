"""`make demo`: the whole LCT pipeline on an embedded small default, end to end on a CPU.

1. ``lct-shards synth``  procedural multi-shot scenes (persistent characters and rooms) as mp4s,
   whose characters' colours, sizes and textures and the room's colour are in no prompt;
2. ``lct-shards build``  scene shards: pixel-space latents (exactly invertible, so samples
   decode to frames a person can read) and MiniLM text embeddings (a real encoder, offline);
3. stage 1 (LCT): bidirectional scene attention, from scratch, on torchrun;
4. causal fine-tuning from stage 1's newest checkpoint (context-causal masks);
5. ``lct-sample``: the prompts of a few held-out scenes (other worlds than training's),
   generated scene-wide by stage 1 (joint) and shot by shot with the KV cache by the causal
   model (ar-kv), scored by ``lct-eval`` (do the unprompted colours agree across the shots?)
   next to the baseline without cross-shot attention (BENCHMARKS.md,
   ``bench/consistency.py``), with a contact sheet of each rendered scene beside its samples.

Every step runs the real command line a user would type (printed before it runs); re-running
resumes (finished shards are skipped, training continues from its newest checkpoint, a sampling
already written from that checkpoint by the same command is kept). The
settings live in ``conf/experiment/demo.yaml`` (training) and the constants below (data, sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from data_tools.manifest import read_manifest
from lct_train.core.checkpoint_layout import META_FILE, newest_checkpoint
from lct_train.core.files import write_atomic
from lct_train.data.schema import strip_cut
from lct_train.eval.cli import evaluate
from lct_train.sample.pipeline import CONTACT_SHEET

DEFAULT_OUT = "demo_out"
# The recipe of bench/consistency.py's CPU scale, where LCT measurably beats the baseline: one
# character per scene, one-frame 32x32 shots (pixel:2 latents, 64 video tokens a shot).
NUM_SCENES = 64
SYNTH = {"--height": 32, "--width": 32, "--fps": 6, "--min-shots": 2, "--max-shots": 4,
         "--max-characters": 1, "--seed": 0}
BUILD = {"--vae": "pixel:2", "--text-encoder": "minilm", "--area": 1024, "--patch": 2, "--fps": 4,
         "--max-frames": 1, "--scenes-per-shard": 4, "--workers": 2}
# No guidance and the raw weights: what sampled best after such short runs (BENCHMARKS.md);
# the timestep shift is the training shift of conf/experiment/demo.yaml.
SAMPLE = {"steps": 16, "guidance": 1.0, "t_c": 0.3, "shift": 1.0, "seed": 1000,
          "size": {"frames": 1, "height": 32, "width": 32}}
WEIGHTS = "model"
# Sampled: held-out scenes (other worlds than training's, as in the benchmark), so agreeing
# colours come from the context, not from prompts the model has memorised.
HELDOUT = {"--num-scenes": 8, "--seed": 1}
SAMPLE_SCENES = 4  # the first held-out scenes of 2..MAX_SAMPLE_SHOTS cut shots
MAX_SAMPLE_SHOTS = 4
# (title, run, mode): scene-wide attention from stage 1, shot by shot from the causal model
SAMPLINGS = (("stage 1, joint", "stage1", "joint"), ("causal FT, ar-kv", "causal_ft", "ar-kv"))
STAGE1_STEPS = 1200
CAUSAL_STEPS = 150
MP4_FPS = 6
SAMPLED_FROM = "demo_sampled_from.json"  # in a sampling folder: the command and checkpoint it ran
# The training recipe of each model family (`--family`): conf/experiment/<name>.yaml.
EXPERIMENTS = {"mmdit": "demo", "wan": "demo_wan"}
# hidden_agreement of each family's isolated-shot baseline (no cross-shot attention), joint
# mode, from BENCHMARKS.md ("Does LCT learn?", bench/consistency.py row (b), the demo's recipe).
BASELINE_HIDDEN_AGREEMENT = {"mmdit": 0.15, "wan": 0.16}


def _run(cmd: list[str], title: str) -> float:
    print(f"\n=== {title}\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    print(f"--- {title}: {seconds:.0f} s", flush=True)
    return seconds


def _flags(options: dict) -> list[str]:
    return [str(item) for key, value in options.items() for item in (key, value)]


def _train_cmd(stage: str, run_dir: Path, data_dir: Path, extra: list[str],
               family: str = "mmdit") -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "lct_train.train.main", f"stage={stage}", f"experiment={EXPERIMENTS[family]}",
        f"run_dir={run_dir}", f"data.sources=[{{path: {data_dir}}}]", *extra,
    ]


def scene_request(scene, index: int, **settings) -> dict:
    """A scene file (as a dict) with the prompts of manifest scene ``scene``, the ``index``-th
    of a set: SAMPLE's settings (``settings`` override them), seed ``SAMPLE.seed + 10 index``
    (shot ``i`` draws its noise from that + ``i``). bench/consistency.py uses it too."""
    shots = [{"prompt": strip_cut(s.prompt), "cut": s.cut} for s in scene.shots]
    return {"key": scene.key, "global_prompt": scene.global_prompt,
            **dict(SAMPLE, seed=SAMPLE["seed"] + 10 * index), **settings, "shots": shots}


def _demo_scenes(manifest: Path, out: Path) -> list[tuple[str, Path]]:
    """``(key, scene file)`` of the first SAMPLE_SCENES scenes of ``manifest`` with
    2..MAX_SAMPLE_SHOTS authentic cuts (the unprompted colours must agree across shots),
    written under ``out``."""
    cuts = [s for s in read_manifest(manifest) if all(shot.cut for shot in s.shots)]
    cuts = [s for s in cuts if 2 <= len(s.shots) <= MAX_SAMPLE_SHOTS][:SAMPLE_SCENES]
    if len(cuts) < 2:  # lct-sample writes one scene into --out itself, several into sub-folders
        raise RuntimeError(f"{manifest}: {len(cuts)} scene(s) of 2..{MAX_SAMPLE_SHOTS} cut shots, "
                           "the demo samples at least 2")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, scene in enumerate(cuts):
        path = out / f"{scene.key}.yaml"
        path.write_text(yaml.safe_dump(scene_request(scene, i), sort_keys=False))
        files.append((scene.key, path))
    return files


def _sample_cmd(files: list[Path], ckpt: Path, mode: str, out: Path) -> list[str]:
    return ["lct-sample", "scene", *map(str, files), "--mode", mode, "--ckpt", str(ckpt),
            "--weights", WEIGHTS, "--codec", BUILD["--vae"], "--text-encoder",
            BUILD["--text-encoder"], "--fps", str(MP4_FPS), "--no-progress", "--out", str(out)]


def _sampling_stamp(cmd: list[str], scene_files: list[Path], run: Path) -> dict | None:
    """What a sampling folder is written from: the command, its scene files' text and the
    run's newest checkpoint (its path and when its metadata was written, so a run trained again
    from scratch samples again); None without a checkpoint (lct-sample then says why)."""
    ckpt = newest_checkpoint(run)
    if ckpt is None:
        return None
    return {"command": cmd, "scenes": [path.read_text() for path in scene_files],
            "checkpoint": str(ckpt), "written_ns": (ckpt / META_FILE).stat().st_mtime_ns}


def _sample(cmd: list[str], scene_files: list[Path], run: Path, folder: Path,
            title: str) -> float | None:
    """Runs the sampling ``cmd`` unless ``folder`` already holds its output from the same
    command, scene files and checkpoint; returns the seconds it took (None: kept)."""
    stamp, stamp_path = _sampling_stamp(cmd, scene_files, run), folder / SAMPLED_FROM
    if stamp is not None and (folder / "manifest.jsonl").is_file() and stamp_path.is_file() \
            and json.loads(stamp_path.read_text()) == stamp:
        print(f"\n=== {title}: kept, already sampled from {stamp['checkpoint']} ({folder})")
        return None
    seconds = _run(cmd, title)
    write_atomic(stamp_path, json.dumps(stamp))  # not None: lct-sample found the checkpoint
    return seconds


def _comparison_sheet(path: Path, rendered: Path, sample_dir: Path, keys: list[str]) -> None:
    """One row per sampled scene: the rendered scene, then each sampling of SAMPLINGS."""
    from lct_train.eval.scenes import read_eval_manifest, shot_frames
    from lct_train.sample.writers import write_contact_sheet, write_sheet_grid

    truth = {s.key: s for s in read_eval_manifest(rendered / "manifest.jsonl")}
    prompts = {s.key: [strip_cut(shot.prompt) for shot in s.shots]
               for s in read_manifest(rendered / "manifest.jsonl")}
    rows = []
    for key in keys:
        real = sample_dir / f"truth-{key}.png"
        write_contact_sheet(real, [shot_frames(s).numpy() for s in truth[key].shots],
                            prompts[key], frames_per_row=1)
        rows.append([(real, f"{key}: rendered (its own colours)")] + [
            (sample_dir / mode / key / CONTACT_SHEET, f"{title} (colours named in no prompt)")
            for title, _, mode in SAMPLINGS])
    write_sheet_grid(path, rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default demo_out)")
    parser.add_argument("--stage1-steps", type=int, default=None, help="override stage-1 steps")
    parser.add_argument("--causal-steps", type=int, default=None, help="override causal-FT steps")
    parser.add_argument("--scenes", type=int, default=NUM_SCENES, help="synthetic scenes to render")
    parser.add_argument("--family", choices=sorted(EXPERIMENTS), default="mmdit",
                        help="model family to train: the MMDiT (`small`, default) or Wan "
                             "(`wan-small`); conf/experiment/demo[_wan].yaml")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    raw, heldout, data = out / "raw", out / "heldout", out / "data"
    stage1, causal = out / "runs" / "stage1", out / "runs" / "causal_ft"
    sample_dir = out / "sample"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timings = {}

    if not (raw / "manifest.jsonl").is_file():
        timings["synth"] = _run(["lct-shards", "synth", str(raw), *_flags(SYNTH),
                                 "--num-scenes", str(args.scenes)], "synthetic scenes")
    if not (heldout / "manifest.jsonl").is_file():
        timings["held-out"] = _run(["lct-shards", "synth", str(heldout),
                                    *_flags(dict(SYNTH, **HELDOUT))], "held-out scenes")
    timings["build"] = _run(
        ["lct-shards", "build", str(raw / "manifest.jsonl"), str(data), *_flags(BUILD)],
        "scene shards",
    )
    s1_steps = f"steps={args.stage1_steps or STAGE1_STEPS}"
    timings["stage1"] = _run(_train_cmd("lct", stage1, data, [s1_steps], args.family),
                             "stage 1: LCT")
    ft_extra = [f"steps={args.causal_steps or CAUSAL_STEPS}", f"stage.init_run={stage1}"]
    timings["causal_ft"] = _run(_train_cmd("causal_ft", causal, data, ft_extra, args.family),
                                "causal FT")

    scenes = _demo_scenes(heldout / "manifest.jsonl", out / "scenes")
    keys = [key for key, _ in scenes]
    scores = {}
    for title, run, mode in SAMPLINGS:
        folder, run_dir = sample_dir / mode, out / "runs" / run
        files = [path for _, path in scenes]
        seconds = _sample(_sample_cmd(files, run_dir / "checkpoints", mode, folder), files,
                          run_dir, folder, f"sampling {len(scenes)} scenes: {title}")
        if seconds is not None:
            timings[f"sample {mode}"] = seconds
        _, _, scores[title] = evaluate(str(folder / "manifest.jsonl"), str(heldout / "gt"))
    sheet = sample_dir / CONTACT_SHEET
    _comparison_sheet(sheet, heldout, sample_dir, keys)

    total = sum(timings.values())
    print("\n=== demo done in {:.0f} s ({})".format(
        total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"contact sheet:  {sheet}  (per scene: as rendered, then each sampling)")
    print(f"samples:        {sample_dir}/<mode>/<scene>/ (scene.mp4, shot_*.mp4, contact_sheet.png)")
    print(f"scene files:    {out / 'scenes'}  (the prompts of held-out scenes {', '.join(keys)})")
    first = yaml.safe_load(scenes[0][1].read_text())["global_prompt"]
    print(f"prompts:        e.g. {first}  (no colour is named)")
    print(f"hidden_agreement: share of shot pairs whose unprompted colours agree (lct-eval, "
          f"docs/eval.md), over {len(keys)} scenes:")
    for title, score in scores.items():
        print(f"  {title:<18} {_fmt(score['hidden_agreement'])} (characters "
              f"{_fmt(score['character_agreement'])}, room {_fmt(score['room_agreement'])})")
    print(f"  {'the baseline without cross-shot attention':<18} "
          f"{_fmt(BASELINE_HIDDEN_AGREEMENT[args.family])} (BENCHMARKS.md, "
          f"bench/consistency.py --family {args.family})")
    print(f"lct-eval:       lct-eval {sample_dir / SAMPLINGS[0][2] / 'manifest.jsonl'} "
          f"--truth {heldout / 'gt'}")
    print(f"tensorboard:    tensorboard --logdir {out / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
