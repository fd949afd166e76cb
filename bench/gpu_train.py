"""The training stages of ``bench/gpu_suite.py``: one-GPU training steps of a preset at fixed
scene geometries (tokens/s, MFU, peak memory), host syncs in one step, and the memory
estimator's prediction for the same scenes (``lct-estimate``).

The steps are the real ``Trainer``'s (FSDP2 over a one-rank group, full activation
checkpointing, AdamW, the one metrics sync); only its batch source is swapped for scenes of one
set geometry (``FixedScenes``).
"""

from __future__ import annotations

import contextlib
import json
import linecache
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import torch
from gpu_stages import ROOT, Profile, Recorder, StageFailure, kernel_available
from torch._dynamo.utils import counters as dynamo_counters
from train_step import bench_overrides, make_trainer, summarise

from lct_train.model.attention import get_backend
from lct_train.model.layout import GroupSpec, SceneSpec
from lct_train.train.batches import SyntheticBatches
from lct_train.train.flops import MATMUL_FLOPS

ESTIMATOR_MODULE = "lct_train.estimate.cli"  # lct-estimate
SYNC_WARNING = "synchroniz"  # "called a synchronizing CUDA operation"


class FixedScenes(SyntheticBatches):
    """Synthetic micro-batches (random values) of one scene of the geometry ``spec``."""

    def __init__(self, trainer, spec: SceneSpec):
        cfg = trainer.cfg
        super().__init__(trainer.model_cfg, cfg.synthetic, cfg.seed, trainer.world.dp_rank,
                         cfg.optim.grad_accum)
        self.spec = spec

    def _spec(self, rng) -> SceneSpec:
        return self.spec


def scene(profile: Profile, shots: int, dummy_grid) -> SceneSpec:
    """A global group and ``shots`` equal shots of the profile's geometry."""
    return SceneSpec((GroupSpec(profile.global_text, tuple(dummy_grid), is_global=True),
                      *(GroupSpec(profile.shot_text, profile.shot_grid) for _ in range(shots))))


def run_steps(trainer, steps: int) -> list[dict]:
    """``steps`` more optimizer steps of ``trainer``; their metric records."""
    trainer.cfg.steps = trainer.state["step"] + steps
    return trainer.train()


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Achieved TFLOP/s of a ``size``-cubed matmul (the machine's practical ceiling)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return MATMUL_FLOPS * size**3 * repeats / (time.perf_counter() - start) / 1e12


def train_overrides(rec: Recorder, profile: Profile, steps: int, compiled: bool,
                    run_dir: Path, model: str | None = None) -> list[str]:
    overrides = [*bench_overrides(model or profile.model, steps, profile.device, str(run_dir)),
                 "synthetic.scenes_per_batch=1", "parallel.activation_checkpoint=full",
                 f"parallel.compile={str(compiled).lower()}",
                 f"parallel.compile_backend={profile.compile_backend}"]
    missing = kernel_available("flash-varlen") if profile.device == "cuda" else None
    if missing:  # auto would pick flash-varlen for these bidirectional batches
        rec.fail(f"flash-varlen: {missing}; training with model.attn_backend=flex instead")
        overrides.append("model.attn_backend=flex")
    return overrides


def stage_train(rec: Recorder, profile: Profile, scratch: Path, compiled: bool,
                model: str | None = None, extra: tuple[str, ...] = (),
                shots: tuple[int, ...] | None = None) -> None:
    """Steps at each of ``profile.train_shots`` (one trainer): tokens/s, MFU, peak memory.
    ``model``: another preset than the profile's; ``extra``: more overrides (``finetune=lora``);
    ``shots``: other shot counts."""
    device = torch.device(profile.device)
    measured = matmul_tflops(device, profile.dtype, profile.matmul_size)
    rec.info("matmul_tflops", round(measured, 4))
    per_phase = profile.train_warmup + profile.train_steps
    all_shots = shots or (profile.compiled_shots if compiled else profile.train_shots)
    overrides = [*train_overrides(rec, profile, per_phase * len(all_shots), compiled,
                                  scratch / "run", model), *extra]
    if device.type == "cpu":  # no datasheet peak: MFU against the measured matmul rate
        overrides.append(f"logging.peak_tflops={measured}")
        rec.note(f"CPU: MFU is against the measured {profile.matmul_size}^3 matmul rate; "
                 "peak memory is the process's peak RSS")
    start = time.perf_counter()
    trainer = make_trainer(overrides)
    rec.info("build_s", round(time.perf_counter() - start, 1))
    rec.info("overrides", " ".join(overrides))
    cfg = trainer.model_cfg
    rec.info("attention_backend", get_backend(cfg.attn_backend, device, causal=False).name)
    for shots in all_shots:
        spec = scene(profile, shots, cfg.dummy_grid)
        trainer.batches = FixedScenes(trainer, spec)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            records = run_steps(trainer, per_phase)
        except Exception as err:  # e.g. out of memory at the largest scene: try the others
            rec.fail(f"{shots} shots: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        first = records[0]["step_time_s"]
        s = summarise(records[profile.train_warmup:])
        rec.row("train", {"compile": compiled, "shots": shots, "tokens": spec.num_tokens,
                          "first_step_s": first, "step_s": s["step_s"],
                          "tokens_per_s": s["tokens_per_s"], "tflops": s["tflops"],
                          "mfu": s.get("mfu"), "peak_gb": s["peak_memory_gb"],
                          "phase_s": time.perf_counter() - start,
                          # dynamo graphs so far: a few per block kind, not one per layer/shape
                          "graphs": dynamo_counters["stats"]["unique_graphs"]})


# ------------------------------------------------------------------------- 5. host syncs
@contextlib.contextmanager
def sync_warnings(device: torch.device):
    """Records every synchronizing CUDA operation (``torch.cuda.set_sync_debug_mode``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


def sync_sites(caught) -> dict[str, int]:
    """``file:line  source`` -> count, for the sync warnings among ``caught``."""
    sites: dict[str, int] = {}
    for w in caught:
        if SYNC_WARNING in str(w.message):
            path = Path(w.filename)
            with contextlib.suppress(ValueError):
                path = path.relative_to(ROOT)
            site = f"{path}:{w.lineno}  {linecache.getline(w.filename, w.lineno).strip()}"
            sites[site] = sites.get(site, 0) + 1
    return sites


def stage_host_syncs(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """One training step (after a warm-up step) under the sync debug mode: syncs counted."""
    device = torch.device(profile.device)
    overrides = train_overrides(rec, profile, 2, False, scratch / "run")
    if profile.model != "tiny":
        overrides.append(f"model.num_dual_blocks={profile.sync_layers}")
    trainer = make_trainer(overrides)
    trainer.batches = FixedScenes(trainer, scene(profile, 1, trainer.model_cfg.dummy_grid))
    run_steps(trainer, 1)  # start-up work of the first step is not the step's
    if device.type != "cuda":
        run_steps(trainer, 1)
        rec.note("set_sync_debug_mode needs CUDA: the step ran, its syncs are counted on a GPU")
        rec.row("host syncs", {"site": "n/a on CPU", "count": None})
        return
    with sync_warnings(device) as caught:
        run_steps(trainer, 1)
    sites = sync_sites(caught)
    for site, count in sorted(sites.items(), key=lambda kv: -kv[1]):
        rec.row("host syncs", {"site": site, "count": count})
    total = sum(sites.values())
    rec.info("host_syncs_per_step", total)
    rec.info("goal", f"{'PASS' if total <= 1 else 'FAIL'}: {total} sync(s), the design has one "
                     "(reduce_step_metrics)")


# ------------------------------------------------------------------------- memory estimator
def run_estimator(overrides: list[str], module: str = ESTIMATOR_MODULE) -> dict:
    """The estimator's last output line (one JSON object), run as ``lct-estimate`` would."""
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=ROOT, text=True,
                          capture_output=True, check=False)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1])
        float(result["peak_bytes"])  # the key the comparison needs
    except (IndexError, ValueError, KeyError, TypeError) as err:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise StageFailure(f"lct-estimate {' '.join(overrides)}: exit {proc.returncode}: "
                           f"{tail[0][:300]}") from err
    return result


def stage_estimate(rec: Recorder, profile: Profile, scratch: Path) -> None:
    """``lct-estimate``'s peak memory for the training stages' scenes (CPU, fake tensors)."""
    from lct_train.model.config import ModelConfig

    dummy = ModelConfig.from_yaml(ROOT / "conf" / "model" / f"{profile.model}.yaml").dummy_grid
    if profile.global_text != profile.shot_text:
        raise StageFailure("lct-estimate gives every group the same text length")
    dtype = str(profile.dtype).removeprefix("torch.")
    runs = {}
    with ThreadPoolExecutor() as pool:  # one process per scene, side by side
        for shots in sorted(set(profile.train_shots) | set(profile.compiled_shots), reverse=True):
            overrides = [f"model={profile.model}", "parallel.activation_checkpoint=full",
                         f"parallel.param_dtype={dtype}", "estimate.world_size=1",
                         f"estimate.shots={shots}", f"estimate.text_len={profile.shot_text}",
                         f"estimate.grid=[{','.join(map(str, profile.shot_grid))}]",
                         f"estimate.gpu_gb={profile.gpu_gb}"]
            runs[pool.submit(run_estimator, overrides)] = shots
        for done in as_completed(runs):
            shots = runs[done]
            try:
                result = done.result()
            except StageFailure as err:
                rec.fail(str(err))
                continue
            rec.row("estimate", {"shots": shots,
                                 "tokens": scene(profile, shots, dummy).num_tokens,
                                 "estimated_peak_gb": result["peak_bytes"] / 2**30,
                                 "fits": result.get("fits")})
