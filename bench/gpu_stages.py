"""The stages of ``bench/gpu_suite.py``: their sizes (one profile for the GPU, one for the CPU
smoke run), the recorder they write their figures with, and the stages that are not about
training (gpu-marked tests, the attention table, KV-cache sampling). Training, host syncs and
the memory estimator are in ``gpu_train.py``.

Each stage runs in its own process (``gpu_suite.py --child NAME``) and writes its figures as
JSON lines while it runs, so a stage stopped at its cap keeps the rows it finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_MARK = "mark.gpu"  # `@pytest.mark.gpu` and `pytestmark = pytest.mark.gpu`


@dataclass(frozen=True)
class Profile:
    """Sizes of every stage. The geometry is per shot: ``shot_text`` text tokens and a
    ``shot_grid`` (F, H, W) of latent patches; scenes of the training stages also have a global
    group of ``global_text`` text tokens plus the model's dummy tokens."""

    name: str
    device: str
    dtype: torch.dtype
    model: str  # conf/model preset
    shot_text: int
    shot_grid: tuple[int, int, int]
    global_text: int
    attn_kernels: tuple[tuple[str, bool], ...]  # (kernel, with backward)
    attn_shots: tuple[int, ...]
    attn_warmup: int
    attn_repeats: int
    train_shots: tuple[int, ...]  # largest first: the goal's figure comes first
    compiled_shots: tuple[int, ...]
    train_warmup: int
    train_steps: int
    compile_backend: str
    kv_shots: tuple[int, ...]
    kv_warmup: bool
    kv_steps: int
    kv_layers: int
    sync_layers: int
    matmul_size: int
    vsd_model: str  # conf/model preset of the vs-diffusers stage (made diffusers-compatible)
    wan_model: str  # conf/model preset of the Wan-family training stage
    vsd_blocks: tuple[int, int]  # its dual, single blocks
    gpu_gb: float  # the memory the estimator is told the device has
    caps: dict[str, int]  # stage -> seconds


GPU = Profile(
    name="gpu", device="cuda", dtype=torch.bfloat16, model="lct-3b",
    # 480x480 area (30x30 patches per latent frame), 2 s at 12 fps = 7 latent frames, 64 text
    # tokens: 6,364 tokens per shot, 57,356 for 9 shots + global (shared/research/scale.md).
    shot_text=64, shot_grid=(7, 30, 30), global_text=64,
    attn_kernels=(("flex", True), ("flash-varlen", True)), attn_shots=tuple(range(1, 10)),
    attn_warmup=1, attn_repeats=3,
    train_shots=(9, 5, 1), compiled_shots=(9, 1), train_warmup=1, train_steps=2, compile_backend="inductor",
    kv_shots=tuple(range(2, 10)), kv_warmup=True, kv_steps=4, kv_layers=2, sync_layers=2, matmul_size=8192,
    vsd_model="hunyuan-video", vsd_blocks=(2, 4), wan_model="wan2.1-1.3b", gpu_gb=141.0,
    caps={"tests": 60, "attention": 50, "train-eager": 90, "train-compiled": 100, "train-lora": 25,
          "train-wan": 35, "kv-cache": 30, "host-syncs": 30, "vs-diffusers": 40, "estimate": 300},
)
SMOKE = Profile(
    name="smoke", device="cpu", dtype=torch.float32, model="tiny",
    shot_text=4, shot_grid=(1, 2, 4), global_text=4,
    # flex has no CPU backward; the ghost-segment plan runs through its SDPA emulator
    attn_kernels=(("flex", False), ("varlen-emulated", True)), attn_shots=(1, 2),
    attn_warmup=1, attn_repeats=1,
    # inductor's C++ code generation takes minutes on 2 shared cores: dynamo capture only
    train_shots=(2, 1), compiled_shots=(1,), train_warmup=1, train_steps=1, compile_backend="eager",
    kv_shots=(2,), kv_warmup=False, kv_steps=2, kv_layers=1, sync_layers=1, matmul_size=256,
    vsd_model="tiny", vsd_blocks=(1, 1), wan_model="tiny-wan", gpu_gb=24.0,
    # about 90 s of CPU in all; the caps allow for a machine shared four ways (the estimate
    # runs beside every other stage)
    caps={"tests": 90, "attention": 90, "train-eager": 90, "train-compiled": 90, "train-lora": 90,
          "train-wan": 90, "kv-cache": 90, "host-syncs": 90, "vs-diffusers": 90, "estimate": 300},
)
PROFILES = {p.name: p for p in (GPU, SMOKE)}


class StageFailure(RuntimeError):
    """A stage ran but a part of it failed (recorded; the suite goes on)."""


class Recorder:
    """Appends a stage's figures to a JSON-lines file as they come, and prints them."""

    def __init__(self, path: Path):
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 (open for the stage's life)
        self.failures: list[str] = []

    def _write(self, entry: dict) -> None:
        self._file.write(json.dumps(entry, default=str) + "\n")

    def row(self, table: str, row: dict) -> None:
        self._write({"table": table, "row": row})
        print(f"[{table}] " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    def info(self, key: str, value) -> None:
        self._write({"info": {key: value}})
        print(f"[info] {key} = {value}", flush=True)

    def note(self, text: str) -> None:
        self._write({"note": text})
        print(f"[note] {text}", flush=True)

    def fail(self, text: str) -> None:
        """A failed part: noted now; the stage exits non-zero when it is done."""
        self.failures.append(text)
        self.note(f"FAILED: {text}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_preset(name: str):
    """``ModelConfig`` of a conf/model preset (through the same composition as training)."""
    from lct_train.config.store import compose_config

    return compose_config([f"model={name}", "data_source=synthetic",
                           "run_dir=/tmp/lct-gpu-suite"]).model


# ------------------------------------------------------------------------- 1. gpu-marked tests
def gpu_test_files(tests: Path = ROOT / "tests") -> list[Path]:
    """Test modules that hold a gpu mark (collecting only these keeps the stage short)."""
    return sorted(p for p in tests.rglob("test_*.py") if GPU_MARK in p.read_text())


def parse_junit(path: Path) -> list[dict]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (found.get("message") or "").strip().splitlines()[:1]
                message = message[0][:160] if message else ""
                break
        cases.append({"test": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                      "outcome": outcome, "seconds": float(case.get("time", 0.0)),
                      "message": message})
    return cases


def stage_tests(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """The gpu-marked tests through pytest (on CPU they are collected and skipped)."""
    files = gpu_test_files()
    if not files:
        raise StageFailure("no test module holds a gpu mark")
    junit = scratch / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *(str(f.relative_to(ROOT)) for f in files)]
    rec.info("command", " ".join(cmd[1:]))
    # no third-party plugins (hypothesis, hydra's, benchmark...): the gpu tests use none
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    print(proc.stdout[-6000:], flush=True)
    if not junit.is_file():
        raise StageFailure(f"pytest exited {proc.returncode} without a report")
    cases = parse_junit(junit)
    for case in cases:
        rec.row("gpu tests", case)
    counts = {k: sum(c["outcome"] == k for c in cases)
              for k in ("passed", "failed", "error", "skipped")}
    rec.info("counts", counts)
    if not cases:
        raise StageFailure("no gpu-marked test was collected")
    if proc.returncode != 0:
        raise StageFailure(f"pytest exited {proc.returncode}: {counts}")


# ------------------------------------------------------------------------- 2. attention table
def kernel_available(kernel: str) -> str | None:
    """Why ``kernel`` cannot run here (None: it can)."""
    if kernel != "flash-varlen":
        return None
    from lct_train.model.attention.varlen import varlen_kernel

    try:
        fn = varlen_kernel()
    except RuntimeError as err:  # torch without torch.nn.attention.varlen, or another signature
        return str(err)
    print(f"flash-varlen kernel: {fn.__module__}.{fn.__name__}", flush=True)
    return None


def stage_attention(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """Bidirectional vs block-causal, n shots, per kernel: ratio vs (n+1)/(2n), TFLOP/s."""
    from attention_block import attention_rows

    cfg = model_preset(profile.model)
    rec.info("geometry", f"{profile.shot_text} text + {profile.shot_grid} video tokens per shot, "
                         f"{cfg.num_heads} heads x {cfg.head_dim}, {profile.dtype}, no global group")
    device = torch.device(profile.device)
    for kernel, backward in profile.attn_kernels:
        missing = kernel_available(kernel)
        if missing:
            rec.fail(f"{kernel}: {missing}")
            continue
        try:
            for row in attention_rows([(kernel, backward)], profile.attn_shots, profile.shot_text,
                                      profile.shot_grid, cfg.num_heads, cfg.head_dim,
                                      profile.dtype, device, profile.attn_warmup,
                                      profile.attn_repeats):
                rec.row("attention", row)
        except Exception as err:  # one kernel failing must not hide the other's table
            rec.fail(f"{kernel}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")


# ------------------------------------------------------------------------- 4. KV-cache sampling
def stage_kv_cache(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """AR sampling of n shots, KV cache vs full recompute, at the preset's width."""
    from kv_cache_sampling import ShotGeometry, build_sampler, kv_rows

    preset = model_preset(profile.model)
    cfg = dataclasses.replace(preset, num_dual_blocks=profile.kv_layers,
                              num_single_blocks=min(preset.num_single_blocks, profile.kv_layers),
                              attn_backend="auto")
    f, h, w = profile.shot_grid
    pt, ph, pw = cfg.patch_size
    geo = ShotGeometry(profile.shot_text, (cfg.latent_channels, f * pt, h * ph, w * pw))
    sampler, block_params = build_sampler(cfg, profile.kv_steps, 1.0, max(profile.kv_shots),
                                          profile.device, profile.dtype)
    rec.info("model", f"width {cfg.hidden_size} ({cfg.num_heads} x {cfg.head_dim}), "
                      f"{cfg.num_dual_blocks} dual + {cfg.num_single_blocks} single blocks, "
                      f"{profile.dtype}, attention auto (flex on CUDA, reference on CPU)")
    rec.info("sampling", f"{profile.kv_steps} Euler steps, guidance 1, shot latent "
                         f"{geo.shot_latent}, {geo.text_tokens} text tokens per prompt")
    for row in kv_rows(sampler, cfg, geo, block_params, profile.kv_shots, repeat=1,
                       warmup=profile.kv_warmup):
        rec.row("kv-cache", row)


# ------------------------------------------------------------------------- 6. vs diffusers
def stage_vs_diffusers(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """lct-train vs diffusers' HunyuanVideoTransformer3DModel, same weights and one shot, at the
    preset's width with fewer blocks: forward and forward+backward time, parity."""
    from vs_diffusers import compare, diffusers_compatible

    cfg = diffusers_compatible(model_preset(profile.vsd_model), *profile.vsd_blocks)
    cfg = dataclasses.replace(cfg, attn_backend="auto")
    rec.info("model", f"{profile.vsd_model} width {cfg.hidden_size} ({cfg.num_heads} x "
                      f"{cfg.head_dim}), {cfg.num_dual_blocks} dual + {cfg.num_single_blocks} "
                      f"single blocks, {profile.dtype}, lct-train attention auto")
    rec.info("shot", f"{profile.shot_text} text + {profile.shot_grid} video patches, no global "
                     "group (the single-shot layout diffusers runs)")
    for row in compare(cfg, profile.shot_grid, profile.shot_text, torch.device(profile.device),
                       profile.dtype, repeats=profile.attn_repeats, warmup=profile.attn_warmup):
        rec.row("vs-diffusers", row)
