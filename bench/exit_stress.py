"""Clean exits under torchrun (issue 22): runs SP sampling, SP training and FSDP training many
times each on 2 gloo ranks and counts the abnormal exits (a non-zero status, a signal, or
"terminate called" / a traceback in the output). Every count should be 0.

    python bench/exit_stress.py              # 20 runs of each job
    python bench/exit_stress.py --runs 5 --jobs sp-sample

Prints one line per job (runs, abnormal, seconds per run) and writes the output of every
abnormal run to ``--logs`` (a temporary folder by default) for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
SIGNS_OF_TROUBLE = ("terminate called", "Traceback", "core dumped", "Signal ")
TRAIN = ["model=tiny", "parallel=cpu", "logging.tensorboard=false", "logging.console=false",
         "data_source=synthetic", "synthetic.scenes_per_batch=2", "steps=2", "checkpoint.every=2"]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            *args]


def _sampling_inputs(work: Path) -> list[str]:
    """A tiny causal model export and a 3-shot ar-kv scene file (the SP sampling test's)."""
    from safetensors.torch import save_file

    from lct_train.model.config import ModelConfig
    from lct_train.model.mmdit import LCTModel

    cfg = ModelConfig.from_yaml(REPO / "conf" / "model" / "tiny.yaml")
    cfg.latent_channels, cfg.attn_backend = 12, "reference"
    torch.manual_seed(0)
    model = LCTModel(cfg)
    export = work / "export"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(export / "model.safetensors"))
    (export / "config.json").write_text(json.dumps(cfg.to_dict()))
    scene = {"global_prompt": "Character 1: a red fox.", "mode": "ar-kv", "steps": 2,
             "guidance": 2.0, "t_c": 0.3, "seed": 7,
             "size": {"frames": 2, "height": 12, "width": 16},
             "shots": [{"prompt": f"Character 1, shot {i}."} for i in range(3)]}
    (work / "scene.yaml").write_text(json.dumps(scene))
    return ["-m", "lct_train.sample.cli", "scene", str(work / "scene.yaml"), "--ckpt",
            str(export / "model.safetensors"), "--codec", "pixel:2", "--text-encoder", "tiny",
            "--no-progress", "--mask", "causal", "--sp", "2"]


def _jobs(work: Path) -> dict[str, callable]:
    sample = _sampling_inputs(work)
    train = ["-m", "lct_train.train.main", *TRAIN]
    return {
        "sp-sample": lambda i: _torchrun(*sample, "--out", str(work / f"sample-{i}")),
        "sp-train": lambda i: _torchrun(*train, "parallel.sp_degree=2",
                                        f"run_dir={work / f'sp-{i}'}"),
        "fsdp-train": lambda i: _torchrun(*train, f"run_dir={work / f'fsdp-{i}'}"),
    }


def abnormal(proc: subprocess.CompletedProcess) -> bool:
    out = proc.stdout + proc.stderr
    return proc.returncode != 0 or any(sign in out for sign in SIGNS_OF_TROUBLE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--jobs", nargs="+", default=["sp-sample", "sp-train", "fsdp-train"])
    p.add_argument("--logs", help="folder for the output of abnormal runs")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        logs = Path(args.logs) if args.logs else work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        jobs = _jobs(work)
        for name in args.jobs:
            bad, started = 0, time.perf_counter()
            for i in range(args.runs):
                proc = subprocess.run(jobs[name](i), capture_output=True, text=True,
                                      timeout=TIMEOUT_S, env=env)
                if abnormal(proc):
                    bad += 1
                    (logs / f"{name}-{i}.log").write_text(
                        f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
            seconds = (time.perf_counter() - started) / args.runs
            print(json.dumps({"job": name, "runs": args.runs, "abnormal": bad,
                              "s_per_run": round(seconds, 1)}), flush=True)
        if args.logs is None and any(logs.iterdir()):
            print(f"abnormal runs' output was in {logs} (removed; pass --logs to keep it)")


if __name__ == "__main__":
    main()
