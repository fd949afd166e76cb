"""One prepared GPU run: kernels, bf16 parity, block-causal speed, MFU, KV-cache speed, syncs.

Stages (each in its own process, under its own time cap; a stage that fails or overruns is
recorded and the suite goes on):

1. ``tests``: the gpu-marked tests (flex and flash-varlen against the reference, bf16,
   forward+backward, both masks, packed scenes, KV cache);
2. ``attention``: bidirectional vs block-causal attention for n = 1..9 shots, forward+backward,
   flex and flash-varlen: time ratio against (n+1)/(2n), achieved TFLOP/s;
3. ``train-eager`` / ``train-compiled``: one-GPU training steps of ``lct-3b`` (bf16, full
   activation checkpointing, compile off at 9, 5 and 1 shots / on at 9 and 1): tokens/s, MFU
   by the project's FLOP convention, peak memory (next to ``lct-estimate``'s prediction);
   ``train-lora``: the largest scene's steps under ``finetune=lora`` (rank 16, frozen base);
   ``train-wan``: the largest scene's steps of ``wan2.1-1.3b`` (the same geometry, no dummy
   tokens: the Wan global group is text only);
4. ``kv-cache``: auto-regressive sampling, KV cache vs recompute, n = 2..9 at lct-3b width
   (2 blocks): speedup against the FLOP ratio;
5. ``host-syncs``: the synchronizing CUDA calls of one training step
   (``torch.cuda.set_sync_debug_mode("warn")``);
6. ``vs-diffusers``: lct-train's model against diffusers' HunyuanVideoTransformer3DModel on the
   same weights and one shot, hunyuan-video width with 2 dual + 4 single blocks, bf16: forward
   and forward+backward time ratio, parity (``bench/vs_diffusers.py``);

plus ``estimate``, the memory estimator (``lct-estimate``) on the CPU, beside the GPU
stages. Caps are in ``gpu_stages.GPU`` (460 s of GPU stages).
Output, in ``--out`` (default ``$OUT``, else ``gpu_suite_out/``): ``gpu_suite.md``,
``gpu_suite.json``, ``gpu_suite.log`` (every stage's output), ``gpu_suite_estimate.log``.

    python bench/gpu_suite.py [--out DIR] [--stages NAME ...]   # a CUDA machine
    python bench/gpu_suite.py --smoke [--out DIR]               # CPU, tiny sizes (CI)

On a lent device machine run ``bash bench/gpu_run.sh`` (BENCHMARKS.md, "GPU suite").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch
from gpu_report import write_report
from gpu_stages import (
    GPU,
    ROOT,
    SMOKE,
    Profile,
    Recorder,
    StageFailure,
    stage_attention,
    stage_kv_cache,
    stage_tests,
    stage_vs_diffusers,
)
from gpu_train import stage_estimate, stage_host_syncs, stage_train

STAGES = {  # name -> (title, function); run in this order
    "tests": ("gpu-marked tests", stage_tests),
    "attention": ("attention: bidirectional vs block-causal", stage_attention),
    "train-eager": ("training step, compile off", lambda r, p, s: stage_train(r, p, s, False)),
    "train-compiled": ("training step, compile on", lambda r, p, s: stage_train(r, p, s, True)),
    "train-lora": ("training step, LoRA rank 16 on the same model, compile off",
                   lambda r, p, s: stage_train(r, p, s, False, extra=("finetune=lora",),
                                               shots=p.train_shots[:1])),
    "train-wan": ("training step of a Wan-family model (wan2.1-1.3b), compile off",
                  lambda r, p, s: stage_train(r, p, s, False, model=p.wan_model,
                                              shots=p.train_shots[:1])),
    "kv-cache": ("KV-cache vs recompute sampling", stage_kv_cache),
    "host-syncs": ("host syncs in one training step", stage_host_syncs),
    "vs-diffusers": ("lct-train vs diffusers' HunyuanVideo transformer", stage_vs_diffusers),
    "estimate": ("memory estimator (CPU, beside the GPU stages)", stage_estimate),
}
BESIDE = "estimate"  # CPU-only: started first, runs while the GPU stages run
FAILED_EXIT = 1
KILL_GRACE_S = 10
RUNNING: set[subprocess.Popen] = set()  # stages started and not yet finished


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default $OUT)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--cap", action="append", default=[], metavar="STAGE=SECONDS",
                   help="another time cap for a stage (repeatable)")
    p.add_argument("--child", choices=list(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- child side
def third_party_modules() -> list[str]:
    """Top-level modules imported so far that are neither stdlib nor this repository's."""
    own = {"lct_train", "data_tools", "__main__"}
    names = {m.split(".")[0] for m in list(sys.modules)}
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in own
                  and not n.startswith("_") and not (ROOT / "bench" / f"{n}.py").is_file())


def run_child(args: argparse.Namespace) -> int:
    profile = SMOKE if args.smoke else GPU
    args.scratch.mkdir(parents=True, exist_ok=True)
    if profile.device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.manual_seed(0)
    rec = Recorder(args.results)
    try:
        STAGES[args.child][1](rec, profile, args.scratch)
    except StageFailure as err:
        rec.fail(str(err))
    except Exception as err:  # recorded; the traceback goes to the log
        traceback.print_exc()
        rec.fail(f"{type(err).__name__}: {str(err).strip().splitlines()[0][:400] if str(err) else ''}")
    rec.info("imported_modules", third_party_modules())
    return FAILED_EXIT if rec.failures else 0


# ----------------------------------------------------------------------------- parent side
def start_stage(name: str, args, scratch: Path, log) -> tuple[subprocess.Popen, Path]:
    results = scratch / f"{name}.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--results",
           str(results), "--scratch", str(scratch / name), *(["--smoke"] if args.smoke else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if name == BESIDE:  # shares the CPUs with the GPU stages: few threads, low priority
        env["OMP_NUM_THREADS"] = "4"
        cmd = ["nice", "-n", "10", *cmd]
    # Its own process group (killed as one at the cap), in the suite's session: whatever
    # ends the suite's session (the device tool after its command) ends the stages too.
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            **group)
    RUNNING.add(proc)
    return proc, results


def stop_group(proc: subprocess.Popen) -> None:
    """Ends the stage's process group (the stage and what it started), TERM then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_running(signum, _frame) -> None:
    """SIGTERM / SIGINT handler of the suite: ends the running stages' groups, then itself."""
    for proc in list(RUNNING):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(128 + signum)


def finish_stage(proc, results: Path, started: float, cap: int) -> dict:
    """Waits until the stage ends or its cap; its figures, status, wall and CPU time (the CPU
    time is the stage's own when nothing else ends meanwhile)."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        rc = proc.wait(timeout=max(0.0, started + cap - time.monotonic()))
        status = {0: "ok", FAILED_EXIT: "failed"}.get(rc, f"crashed (exit {rc})")
    except subprocess.TimeoutExpired:
        stop_group(proc)
        status = f"timeout (cap {cap} s)"
    RUNNING.discard(proc)
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    stage = {"status": status, "wall_s": round(time.monotonic() - started, 1), "cap_s": cap,
             "cpu_s": round(end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime, 1),
             "tables": {}, "info": {}, "notes": []}
    if results.is_file():
        for line in results.read_text().splitlines():
            entry = json.loads(line)
            if "table" in entry:
                stage["tables"].setdefault(entry["table"], []).append(entry["row"])
            elif "info" in entry:
                stage["info"].update(entry["info"])
            else:
                stage["notes"].append(entry["note"])
    return stage


def machine_info(profile: Profile) -> dict:
    from lct_train.train.trainer import git_revision

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "git": git_revision(),
            "profile": profile.name}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, cuda=torch.version.cuda,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:  # a stage may have run collectives (a trainer's process group)
        from lct_train.parallel.dist import end_process, shutdown

        code = run_child(args)
        shutdown()
        end_process(code)
    profile = SMOKE if args.smoke else GPU
    try:
        caps = {**profile.caps, **{k: int(v) for k, v in (c.split("=") for c in args.cap)}}
    except ValueError:
        print(f"gpu_suite: --cap takes STAGE=SECONDS, got {args.cap}", file=sys.stderr)
        return 2
    unknown = set(caps) - set(STAGES)
    if unknown:
        print(f"gpu_suite: --cap: unknown stage(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    if profile.device == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: no CUDA device is visible; on a CPU machine run it with --smoke",
              file=sys.stderr)
        return 2
    out = args.out or Path(os.environ.get("OUT") or ROOT / "gpu_suite_out")
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="lct-gpu-suite-"))
    report = {"machine": machine_info(profile), "command": " ".join(sys.argv),
              "caps_s": {n: caps[n] for n in args.stages}, "stages": {}}
    print(f"gpu_suite: profile {profile.name}, stages {' '.join(args.stages)}, out {out}",
          flush=True)
    suite_start = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stopped from outside: stop the stages too
        signal.signal(sig, stop_running)
    with open(out / "gpu_suite.log", "w") as log, \
            open(out / "gpu_suite_estimate.log", "w") as side_log:
        beside, done = None, []
        if BESIDE in args.stages:  # waited for (and stopped at its cap) by a thread
            side = (*start_stage(BESIDE, args, scratch, side_log), time.monotonic(), caps[BESIDE])
            beside = threading.Thread(target=lambda: done.append(finish_stage(*side)),
                                      daemon=True)
            beside.start()
        for name in (n for n in STAGES if n in args.stages and n != BESIDE):
            log.write(f"\n===== {name} (cap {caps[name]} s)\n")
            log.flush()
            started = time.monotonic()
            proc, results = start_stage(name, args, scratch, log)
            report["stages"][name] = finish_stage(proc, results, started, caps[name])
            print(f"  {name:<15} {report['stages'][name]['status']:<24} "
                  f"{report['stages'][name]['wall_s']:>6.1f} s", flush=True)
            write_report(report, profile, out)
        if beside is not None:
            beside.join()
            report["stages"][BESIDE] = done[0]
            print(f"  {BESIDE:<15} {report['stages'][BESIDE]['status']:<24} "
                  f"{report['stages'][BESIDE]['wall_s']:>6.1f} s", flush=True)
    report["wall_s"] = round(time.monotonic() - suite_start, 1)
    text = write_report(report, profile, out)
    print(text, flush=True)
    return 0 if all(s["status"] == "ok" for s in report["stages"].values()) else FAILED_EXIT


if __name__ == "__main__":
    sys.exit(main())
