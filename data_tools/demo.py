"""`make demo`: the whole LCT pipeline on an embedded small default, end to end on a CPU.

1. ``lct-shards synth``  procedural multi-shot scenes (persistent characters and rooms) as mp4s,
   whose characters' colours, sizes and textures and the room's colour are in no prompt;
2. ``lct-shards build``  scene shards: pixel-space latents (exactly invertible, so samples
   decode to frames a person can read) and MiniLM text embeddings (a real encoder, offline);
3. stage 1 (LCT): bidirectional scene attention, from scratch, on torchrun;
4. causal fine-tuning from stage 1's newest checkpoint (context-causal masks);
5. ``lct-sample``: a multi-shot scene, auto-regressively with the KV cache, scored by
   ``lct-eval`` (do the unprompted colours agree across its shots?) next to the baseline
   without cross-shot attention (BENCHMARKS.md, ``bench/consistency.py``).

Every step runs the real command line a user would type (printed before it runs); re-running
resumes (finished shards are skipped, training continues from its newest checkpoint). The
settings live in ``conf/experiment/demo.yaml`` (training) and the constants below (data, sampling).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from data_tools.manifest import read_manifest
from lct_train.data.schema import strip_cut
from lct_train.eval.cli import evaluate

DEFAULT_OUT = "demo_out"
NUM_SCENES = 32
SYNTH = {"--height": 32, "--width": 32, "--fps": 6, "--min-shots": 2, "--max-shots": 3,
         "--max-characters": 2, "--seed": 0}
BUILD = {"--vae": "pixel:2", "--text-encoder": "minilm", "--area": 1024, "--patch": 2, "--fps": 4,
         "--max-frames": 2, "--scenes-per-shard": 2, "--workers": 2}
# The timestep shift matches the training shift of conf/experiment/demo.yaml.
SAMPLE = {"mode": "ar-kv", "steps": 24, "guidance": 3.0, "t_c": 0.2, "shift": 3.0, "seed": 0,
          "size": {"frames": 2, "height": 32, "width": 32}}
SAMPLE_SHOTS = 3
STAGE1_STEPS = 700
CAUSAL_STEPS = 150
MP4_FPS = 6
# hidden_agreement of the isolated-shot baseline (no cross-shot attention), joint mode, from
# BENCHMARKS.md ("Does LCT learn?", bench/consistency.py row (b); one-character scenes).
BASELINE_HIDDEN_AGREEMENT = 0.30


def _run(cmd: list[str], title: str) -> float:
    print(f"\n=== {title}\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    print(f"--- {title}: {seconds:.0f} s", flush=True)
    return seconds


def _flags(options: dict) -> list[str]:
    return [str(item) for key, value in options.items() for item in (key, value)]


def _train_cmd(stage: str, run_dir: Path, data_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "lct_train.train.main", f"stage={stage}", "experiment=demo",
        f"run_dir={run_dir}", f"data.sources=[{{path: {data_dir}}}]", *extra,
    ]


def _demo_scene(manifest: Path) -> tuple[str, dict]:
    """(key, scene file) of the first synthetic scene of authentic cuts with the most shots (up
    to SAMPLE_SHOTS, at least 2: the colours must agree across shots)."""
    cuts = [s for s in read_manifest(manifest) if all(shot.cut for shot in s.shots)]
    cuts = [s for s in cuts if 2 <= len(s.shots) <= SAMPLE_SHOTS]
    if not cuts:
        raise RuntimeError(f"{manifest}: no scene of 2..{SAMPLE_SHOTS} cut shots")
    scene = max(cuts, key=lambda s: len(s.shots))  # the first of the longest
    shots = [{"prompt": strip_cut(s.prompt), "cut": True} for s in scene.shots]
    return scene.key, {"key": scene.key, "global_prompt": scene.global_prompt, **SAMPLE,
                       "shots": shots}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default demo_out)")
    parser.add_argument("--stage1-steps", type=int, default=None, help="override stage-1 steps")
    parser.add_argument("--causal-steps", type=int, default=None, help="override causal-FT steps")
    parser.add_argument("--scenes", type=int, default=NUM_SCENES, help="synthetic scenes to render")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    raw, data = out / "raw", out / "data"
    stage1, causal = out / "runs" / "stage1", out / "runs" / "causal_ft"
    sample_dir = out / "sample"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    timings = {}

    if not (raw / "manifest.jsonl").is_file():
        timings["synth"] = _run(["lct-shards", "synth", str(raw), "--num-scenes", str(args.scenes), *_flags(SYNTH)], "synthetic scenes")
    timings["build"] = _run(
        ["lct-shards", "build", str(raw / "manifest.jsonl"), str(data), *_flags(BUILD)],
        "scene shards",
    )
    s1_steps = f"steps={args.stage1_steps or STAGE1_STEPS}"
    timings["stage1"] = _run(_train_cmd("lct", stage1, data, [s1_steps]), "stage 1: LCT")
    ft_extra = [f"steps={args.causal_steps or CAUSAL_STEPS}", f"stage.init_run={stage1}"]
    timings["causal_ft"] = _run(_train_cmd("causal_ft", causal, data, ft_extra), "causal FT")

    sample_dir.mkdir(parents=True, exist_ok=True)
    scene_file = out / "demo_scene.yaml"
    key, scene = _demo_scene(raw / "manifest.jsonl")
    scene_file.write_text(yaml.safe_dump(scene, sort_keys=False))
    timings["sample"] = _run(
        ["lct-sample", "scene", str(scene_file), "--ckpt", str(causal / "checkpoints"),
         "--codec", BUILD["--vae"], "--text-encoder", BUILD["--text-encoder"],
         "--fps", str(MP4_FPS), "--out", str(sample_dir)],
        "auto-regressive sampling with the KV cache",
    )

    _, _, score = evaluate(str(sample_dir / "manifest.jsonl"), str(raw / "gt"))
    total = sum(timings.values())
    print("\n=== demo done in {:.0f} s ({})".format(
        total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"scene video:    {sample_dir / 'scene.mp4'}")
    print(f"contact sheet:  {sample_dir / 'contact_sheet.png'}")
    print(f"per-shot mp4s:  {sample_dir}/shot_*.mp4")
    print(f"scene file:     {scene_file}  (the prompts of training scene {key})")
    print(f"prompts:        {scene['global_prompt']}  (no colour is named)")
    print(f"hidden_agreement {_fmt(score['hidden_agreement'])} (characters "
          f"{_fmt(score['character_agreement'])}, room {_fmt(score['room_agreement'])}): share of "
          "shot pairs whose unprompted colours agree (lct-eval, docs/eval.md); the baseline "
          f"without cross-shot attention: {BASELINE_HIDDEN_AGREEMENT:.2f} (BENCHMARKS.md)")
    print(f"lct-eval:       lct-eval {sample_dir / 'manifest.jsonl'} --truth {raw / 'gt'}")
    print(f"tensorboard:    tensorboard --logdir {out / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
