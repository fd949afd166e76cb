"""Does LCT learn what the prompts do not say? The ablation of issue 14 (BENCHMARKS.md).

Same data, model, steps and seeds for three models:

  (a) LCT stage 1: scene-wide bidirectional attention       (stage=lct)
  (b) the baseline without cross-shot attention: each shot sees only its own group and the
      global group                                          (stage=lct stage.mask=isolated)
  (c) causal fine-tuning from (a)                           (stage=causal_ft)

trained on ``lct-shards synth`` scenes whose characters' exact colours, sizes and textures and
the room's colour and pattern are drawn per scene and never named in a prompt. Each model then
generates every held-out scene (other worlds than the training scenes, same seeds for every
model) from its prompts in joint and AR (recompute) mode, (c) also in AR-KV mode with a t_c
sweep; the generated scenes are scored by ``lct-eval`` against the held-out ground truth
(docs/eval.md). The table gives means and 95 % intervals over scenes, with the true held-out
scenes (the metric's ceiling) and their shots shuffled across scenes (chance) as controls, then
tests the expectation: (a) above (b), (b) near chance, (c) close to (a). A side-by-side contact
sheet of the first held-out scenes goes to ``--sheet``.

    python bench/consistency.py [--out /tmp/lct_consistency] [--scale cpu|gpu] [--family wan]
        [--steps N] [--causal-steps N] [--train-scenes N] [--eval-scenes N] [--sample-steps N]

Re-running with the same ``--out`` reuses the rendered data and finished trainings.
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

from data_tools import demo
from data_tools.manifest import read_manifest
from lct_train.data.codecs import build_codec
from lct_train.data.text_encoders import build_text_encoder
from lct_train.eval.cli import evaluate
from lct_train.sample.checkpoint_io import load_model
from lct_train.sample.pipeline import (
    CONTACT_SHEET,
    MANIFEST,
    Toolkit,
    run_scene,
    write_scenes_manifest,
)
from lct_train.sample.prompts import PromptEncoder
from lct_train.sample.scene_file import parse_scene
from lct_train.sample.writers import write_contact_sheet, write_sheet_grid

REPO = Path(__file__).resolve().parents[1]
SCALES = {
    # The 2-core CPU: the demo's recipe (data_tools/demo.py, conf/experiment/demo.yaml): one
    # character per scene, 32x32 one-frame shots (pixel:2 latents), 1024-token batches; (a)
    # and (b) train side by side, one core each.
    "cpu": dict(train_scenes=64, eval_scenes=16, steps=demo.STAGE1_STEPS,
                causal_steps=demo.CAUSAL_STEPS, size=32, frames=1, characters=1,
                sample_steps=demo.SAMPLE["steps"], guidance=demo.SAMPLE["guidance"],
                device="cpu", overrides=[]),
    # One GPU: more data and steps, two characters, 64x64 four-frame shots, bf16 FSDP on CUDA.
    "gpu": dict(train_scenes=2048, eval_scenes=64, steps=6000, causal_steps=1500, size=64,
                frames=4, characters=2, sample_steps=30, guidance=3.0, device="cuda",
                overrides=["parallel=fsdp", "data.max_tokens=16384", "data.num_workers=4"]),
}
SYNTH = ["--fps", "6", "--min-shots", "2", "--max-shots", "4"]
WEIGHTS = demo.WEIGHTS  # short runs: the raw weights sample better than the EMA
TRAIN_SEED, EVAL_SEED = 0, 1  # sampling seeds: data_tools.demo.scene_request
SHIFT = demo.SAMPLE["shift"]  # = loss.timestep_shift of conf/experiment/demo.yaml
T_C_SWEEP = (0.0, 0.1, 0.3, 0.5, 0.9)
DEFAULT_T_C = 0.3
MODELS = {  # name -> (label, run name, training overrides)
    "a": ("(a) LCT bidirectional", "lct", ["stage=lct"]),
    "b": ("(b) isolated shots", "isolated", ["stage=lct", "stage.mask=isolated"]),
    "c": ("(c) causal FT from (a)", "causal_ft", ["stage=causal_ft"]),
}
SHEET_SCENES = 2
SHEET_COLUMNS = (("truth", None), ("a", "joint"), ("b", "joint"), ("c", "ar-kv"))
# The expectation, as numbers: (a) clearly above (b) (95 % intervals apart), (b) within
# NEAR of chance, (c) within NEAR of (a).
NEAR = 0.1


def _run(cmd: list[str], title: str, log: Path) -> float:
    print(f"=== {title}\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
    if result.returncode:
        sys.exit(f"{title} failed (exit {result.returncode}); see {log}")
    seconds = time.perf_counter() - start
    print(f"--- {title}: {seconds:.0f} s", flush=True)
    return seconds


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    return env


def _synth(out: Path, scenes: int, seed: int, cfg: dict) -> None:
    if (out / "manifest.jsonl").is_file():
        return
    _run([sys.executable, "-m", "data_tools.cli", "synth", str(out), "--num-scenes", str(scenes),
          "--seed", str(seed), "--height", str(cfg["size"]), "--width", str(cfg["size"]),
          "--max-characters", str(cfg["characters"]), *SYNTH],
         f"synthetic scenes (seed {seed})", out.parent / f"synth-{seed}.log")


def _train_cmd(root: Path, name: str, cfg: dict, steps: int) -> list[str]:
    _, run, overrides = MODELS[name]
    extra = [f"stage.init_run={root / 'runs' / 'lct'}"] if name == "c" else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
            "-m", "lct_train.train.main", *overrides,
            f"experiment={demo.EXPERIMENTS[cfg['family']]}",
            f"run_dir={root / 'runs' / run}", f"data.sources=[{{path: {root / 'data'}}}]",
            f"steps={steps}", "logging.every=100", *cfg["overrides"], *extra]


def _train_side_by_side(root: Path, names: list[str], cfg: dict) -> None:
    """Trains ``names`` concurrently (one process each; a resumed run with nothing left to do
    returns at once)."""
    jobs = []
    for name in names:
        steps = cfg["causal_steps"] if name == "c" else cfg["steps"]
        cmd = _train_cmd(root, name, cfg, steps)
        print(f"=== train {MODELS[name][0]}\n$ {shlex.join(cmd)}", flush=True)
        log = (root / f"train-{MODELS[name][1]}.log").open("w")
        jobs.append((name, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=_env()), time.perf_counter()))
    for name, log, job, start in jobs:
        code = job.wait()
        log.close()
        if code:
            sys.exit(f"training {MODELS[name][0]} failed (exit {code}); see {log.name}")
        print(f"--- train {MODELS[name][0]}: {time.perf_counter() - start:.0f} s", flush=True)


def _requests(eval_dir: Path, cfg: dict) -> list[dict]:
    """One scene file (as a dict) per held-out scene: its prompts, fixed seeds and size."""
    size = {"frames": cfg["frames"], "height": cfg["size"], "width": cfg["size"]}
    return [demo.scene_request(scene, i, steps=cfg["sample_steps"], guidance=cfg["guidance"],
                               shift=SHIFT, t_c=DEFAULT_T_C, size=size)
            for i, scene in enumerate(read_manifest(eval_dir / "manifest.jsonl"))]


def _sample(root: Path, name: str, runs: list[tuple[str, float]], requests: list[dict],
            cfg: dict) -> dict[tuple[str, float], Path]:
    """Generates every held-out scene in each (mode, t_c); returns the manifests."""
    run_dir = root / "runs" / MODELS[name][1]
    loaded = load_model(run_dir / "checkpoints", weights=WEIGHTS, device=cfg["device"])
    encoder = build_text_encoder("minilm")
    kit = Toolkit(loaded, build_codec("pixel:2", device=cfg["device"]),
                  PromptEncoder(encoder, loaded.config), progress=False, fps=6)
    manifests = {}
    for mode, t_c in runs:
        folder = root / "samples" / name / f"{mode}-tc{t_c}"
        manifest = folder / MANIFEST
        if not manifest.is_file():
            start = time.perf_counter()
            scenes = [(folder / req["key"], run_scene(
                parse_scene(dict(req, mode=mode, t_c=t_c), source=req["key"]), kit,
                folder / req["key"], settings={"key": req["key"]})) for req in requests]
            write_scenes_manifest(folder, scenes)
            print(f"    {MODELS[name][0]} {mode} t_c={t_c}: {len(requests)} scenes in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        manifests[(mode, t_c)] = manifest
    return manifests


def _plan() -> dict[str, list[tuple[str, float]]]:
    bidirectional = [("joint", DEFAULT_T_C), ("ar", DEFAULT_T_C)]
    return {"a": bidirectional, "b": bidirectional,
            "c": bidirectional + [("ar-kv", t) for t in T_C_SWEEP]}


def _row(label: str, mode: str, t_c, summary: dict) -> dict:
    return {"model": label, "mode": mode, "t_c": t_c, **summary}


def _fmt(row: dict) -> str:
    def ci(key):
        value, bounds = row.get(key), row.get(f"{key}_ci95")
        if value is None:
            return f"{'-':>21}"
        return f"{value:6.3f} [{bounds[0]:5.2f}, {bounds[1]:5.2f}]"

    t_c = "-" if row["t_c"] is None else f"{row['t_c']:.1f}"
    cols = " ".join(f"{'-' if row.get(k) is None else f'{row[k]:.3f}':>7}"
                    for k in ("shuffled_agreement", "character_agreement", "room_agreement",
                              "palette_similarity", "ssim", "condition_agreement"))
    return (f"{row['model']:<24} {row['mode']:<6} {t_c:>4} {ci('hidden_agreement')} "
            f"{ci('hidden_excess')} {cols}")


def _verdicts(rows: dict) -> list[tuple[str, bool, str]]:
    """The expectation, on ``hidden_agreement`` and on ``hidden_excess`` (the agreement above
    what the same videos score shuffled across scenes)."""
    a, b, c = rows[("a", "joint")], rows[("b", "joint")], rows[("c", "ar-kv")]
    a_ar = rows[("a", "ar")]
    out = []
    for key in ("hidden_agreement", "hidden_excess"):
        out.append((f"(a) clearly above (b) [joint, {key}, 95% intervals apart]",
                    a[f"{key}_ci95"][0] > b[f"{key}_ci95"][1], f"{a[key]:.3f} vs {b[key]:.3f}"))
    out.append((f"(b) near chance [joint, |hidden_excess| <= {NEAR}]",
                abs(b["hidden_excess"]) <= NEAR, f"{b['hidden_excess']:.3f}"))
    for key in ("hidden_agreement", "hidden_excess"):
        out.append((f"(c) close to (a) [{key}, AR-KV t_c={DEFAULT_T_C} vs (a) AR, within {NEAR}]",
                    abs(c[key] - a_ar[key]) <= NEAR, f"{c[key]:.3f} vs {a_ar[key]:.3f}"))
    return out


def _contact_sheet(root: Path, eval_dir: Path, requests: list[dict], path: Path) -> None:
    """Per held-out scene one row: the true scene, then (a) joint, (b) joint, (c) AR-KV."""
    from lct_train.eval.scenes import read_eval_manifest, shot_frames

    truth = {s.key: s for s in read_eval_manifest(eval_dir / "manifest.jsonl")}
    rows = []
    for req in requests[:SHEET_SCENES]:
        tiles = []
        for name, mode in SHEET_COLUMNS:
            if name == "truth":
                scene = truth[req["key"]]
                tmp = root / "samples" / f"truth-{req['key']}.png"
                write_contact_sheet(tmp, [shot_frames(s).numpy() for s in scene.shots],
                                    [s["prompt"][:48] for s in req["shots"]], frames_per_row=2)
                tiles.append((tmp, f"{req['key']}: the true scene"))
            else:
                tiles.append((root / "samples" / name / f"{mode}-tc{DEFAULT_T_C}" / req["key"]
                              / CONTACT_SHEET, f"{MODELS[name][0]}, {mode}"))
        rows.append(tiles)
    write_sheet_grid(path, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/lct_consistency")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    for key in ("steps", "causal_steps", "train_scenes", "eval_scenes", "sample_steps"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, help="override the scale's value")
    p.add_argument("--family", choices=sorted(demo.EXPERIMENTS), default="mmdit",
                   help="model family: the demo's recipe of that family (data_tools/demo.py)")
    p.add_argument("--sheet", default=str(REPO / "docs" / "consistency_contact_sheet.png"))
    args = p.parse_args(argv)
    cfg = dict(SCALES[args.scale], family=args.family)
    cfg.update({k: v for k in ("steps", "causal_steps", "train_scenes", "eval_scenes",
                               "sample_steps") if (v := getattr(args, k)) is not None})
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_dir, eval_dir = root / "train", root / "heldout"
    _synth(train_dir, cfg["train_scenes"], TRAIN_SEED, cfg)
    _synth(eval_dir, cfg["eval_scenes"], EVAL_SEED, cfg)
    if not (root / "data" / "dataset.json").is_file():
        _run([sys.executable, "-m", "data_tools.cli", "build", str(train_dir / "manifest.jsonl"),
              str(root / "data"), "--vae", "pixel:2", "--text-encoder", "minilm", "--area",
              str(cfg["size"] ** 2), "--patch", "2", "--fps", "4", "--max-frames",
              str(cfg["frames"]), "--scenes-per-shard", "4"], "scene shards", root / "build.log")
    _train_side_by_side(root, ["a", "b"], cfg)
    _train_side_by_side(root, ["c"], cfg)
    requests = _requests(eval_dir, cfg)
    truth_dir = eval_dir / "gt"
    rows = {}
    for control, shuffle in (("true", False), ("shuffled", True)):
        _, _, summary = evaluate(str(eval_dir / "manifest.jsonl"), str(truth_dir), shuffle)
        label = "held-out truth (ceiling)" if control == "true" else "shuffled shots (chance)"
        rows[(control, None)] = _row(label, "-", None, summary)
    for name, runs in _plan().items():
        for (mode, t_c), manifest in _sample(root, name, runs, requests, cfg).items():
            _, _, summary = evaluate(str(manifest), str(truth_dir))
            row = _row(MODELS[name][0], mode, t_c if mode != "joint" else None, summary)
            key = (name, mode) if t_c == DEFAULT_T_C else (name, mode, t_c)
            rows[key] = row
    _contact_sheet(root, eval_dir, requests, Path(args.sheet))

    print(f"\nhidden_agreement over {cfg['eval_scenes']} held-out scenes (mean [95% CI]); "
          f"{cfg['steps']} steps (a, b), {cfg['causal_steps']} causal-FT steps (c), "
          f"{cfg['sample_steps']} sampling steps, guidance {cfg['guidance']}")
    print(f"{'model':<24} {'mode':<6} {'t_c':>4} {'hidden_agreement':>21} {'hidden_excess':>21} "
          f"{'chance':>7} {'chars':>7} {'room':>7} {'palette':>7} {'ssim':>7} {'cond':>7}")
    for row in rows.values():
        print(_fmt(row))
    verdicts = _verdicts(rows)
    for text, ok, numbers in verdicts:
        print(f"{'yes' if ok else 'NO ':<4} {text}: {numbers}")
    print(f"contact sheet: {args.sheet}; total {time.perf_counter() - started:.0f} s")
    result = {"scale": args.scale, "config": {k: v for k, v in cfg.items() if k != "overrides"},
              "rows": list(rows.values()),
              "expectation": {text: ok for text, ok, _ in verdicts}}
    (root / "consistency.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({f"{k}_{m}_{s}": rows[(k, m)][f"hidden_{s}"] for k, m in
                      (("a", "joint"), ("b", "joint"), ("c", "ar-kv"))
                      for s in ("agreement", "excess")}
                     | {"expectation_met": all(ok for _, ok, _ in verdicts)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
