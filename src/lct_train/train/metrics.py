"""Step metrics: reduction to host values, and the rank-0 outputs (console, TensorBoard, JSONL).

``reduce_step_metrics`` is the trainer's one host sync per step: the metric vector of
``lct_train.train.step`` is all-reduced (SUM, every rank takes part), the gradient norm is
appended, and everything comes to the host in one ``tolist()``. ``MetricsLogger`` only writes
(rank 0) and never communicates.

Logged keys: ``loss``, ``loss/t_<lo>-<hi>`` (mean shot loss per timestep bucket), ``grad_norm``,
``lr``, ``tokens_per_s``, ``scenes_per_s``, ``packing_efficiency``, ``skipped_samples``,
``text_cut_samples`` (scenes whose prompts were cut to a Wan model's text window: ``loader/text_cut``),
``peak_memory_gb`` (rank 0), ``mfu`` (``lct_train.train.flops``; absent when the peak is
unknown, e.g. on CPU without ``logging.peak_tflops``), ``tflops_per_device``, ``step_time_s``.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from lct_train.train.step import METRIC_FIELDS

BYTES_PER_GB = 1024**3
KB_PER_GB = 1024**2


def reduce_step_metrics(vector: torch.Tensor, grad_norm: torch.Tensor, buckets: int) -> dict:
    """All-reduces the step's metric vector and reads it with the grad norm (one host sync)."""
    dist.all_reduce(vector)
    values = torch.cat([vector, grad_norm.detach().double().view(1)]).tolist()
    out = dict(zip(METRIC_FIELDS, values[: len(METRIC_FIELDS)]))
    rest = values[len(METRIC_FIELDS):]
    out["bucket_sums"], out["bucket_counts"] = rest[:buckets], rest[buckets: 2 * buckets]
    out["grad_norm"] = rest[-1]
    out["loss"] = out["loss_sum"] / max(out["shots"], 1.0)
    return out


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / BYTES_PER_GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_GB


def bucket_name(i: int, buckets: int) -> str:
    return f"loss/t_{i / buckets:.2f}-{(i + 1) / buckets:.2f}"


def progress_bar(done: int, total: int, width: int) -> str:
    if width <= 0:
        return ""
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + "] "


class MetricsLogger:
    """Rank-0 sinks; other ranks' instances do nothing."""

    def __init__(self, logging_cfg, is_main: bool, total_steps: int, world_size: int,
                 peak_flops: float | None):
        self.cfg, self.is_main, self.total = logging_cfg, is_main, total_steps
        self.world_size, self.peak_flops = world_size, peak_flops
        self.tb = None
        self.jsonl = None
        self.started = time.perf_counter()
        self.first_step: int | None = None

    def open(self, run_dir: Path) -> None:
        """Opens the file sinks (rank 0), once the start is accepted: until then a run writes
        nothing."""
        if not self.is_main:
            return
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if self.cfg.jsonl:
            self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115

    def record(self, step: int, m: dict, lr: float, step_time: float, device: torch.device,
               skipped: bool) -> dict:
        """Derived values of one step (all ranks compute them; only rank 0 writes)."""
        if self.first_step is None:
            self.first_step, self.started = step, time.perf_counter() - step_time
        rec = {"step": step, "loss": m["loss"], "grad_norm": m["grad_norm"], "lr": lr,
               "step_time_s": step_time, "tokens_per_s": m["tokens"] / step_time,
               "scenes_per_s": m["scenes"] / step_time,
               "packing_efficiency": m["packing_sum"] / max(m["micro_batches"], 1.0),
               "skipped_samples": m["bad_samples"], "text_cut_samples": m["text_cut_samples"],
               "shots": m["shots"],
               "peak_memory_gb": peak_memory_gb(device), "skipped_step": skipped}
        tflops = m["flops"] / step_time / self.world_size
        rec["tflops_per_device"] = tflops / 1e12
        if self.peak_flops:
            rec["mfu"] = tflops / self.peak_flops
        buckets = len(m["bucket_sums"])
        for i, (s, c) in enumerate(zip(m["bucket_sums"], m["bucket_counts"])):
            if c > 0:
                rec[bucket_name(i, buckets)] = s / c
        if self.is_main:
            self._write(rec)
        return rec

    def _write(self, rec: dict) -> None:
        step = rec["step"]
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for key, value in rec.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
        if self.cfg.console and (step % self.cfg.every == 0 or step in (self.first_step,
                                                                        self.total)):
            print(self.console_line(rec), file=sys.stderr, flush=True)

    def console_line(self, rec: dict) -> str:
        step = rec["step"]
        done = step - (self.first_step or step) + 1
        elapsed = time.perf_counter() - self.started
        eta = timedelta(seconds=int(elapsed / done * (self.total - step)))
        mfu = f" | mfu {100 * rec['mfu']:.1f}%" if "mfu" in rec else ""
        skip = " | SKIPPED" if rec["skipped_step"] else ""
        return (f"step {step}/{self.total} "
                f"{progress_bar(step, self.total, self.cfg.progress_bar_width)}"
                f"{100 * step / self.total:3.0f}% | loss {rec['loss']:.4f} | gnorm "
                f"{rec['grad_norm']:.3f} | lr {rec['lr']:.2e} | {rec['tokens_per_s']:,.0f} tok/s"
                f" | {rec['scenes_per_s']:.2f} scenes/s{mfu} | mem {rec['peak_memory_gb']:.1f} GB"
                f" | eta {eta}{skip}")

    def validation(self, step: int, scalars: dict, image=None) -> None:
        """In-training validation: scalars (``val/...``) and a contact sheet (HWC uint8)."""
        if not self.is_main:
            return
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
            if image is not None:
                self.tb.add_image("val/contact_sheet", image, step, dataformats="HWC")
        self.text(f"validation step {step}: " + ", ".join(f"{k} {v:.4f}"
                                                          for k, v in scalars.items()))

    def text(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.jsonl is not None:
            self.jsonl.close()
