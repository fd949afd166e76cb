"""The training loop: builds model, optimizer, data and checkpointing from a config, resumes,
trains ``steps`` optimizer steps, saves.

Setup: the model is built on the meta device, parallelized (AC -> compile -> FSDP), given
storage for its shards only (``parallelize.materialize``), then filled by a resume or by the
initial weights; optimizer and EMA are built on the filled shards.

Per step (all ranks): fetch ``grad_accum`` micro-batches -> ``forward_backward`` -> clip ->
``reduce_step_metrics`` (the one host sync) -> step or skip (non-finite loss / grad norm, per
``loss.nonfinite``) -> EMA -> log -> checkpoint. Resume and initial weights are described in
``lct_train.train.checkpoint`` and ``lct_train.train.init_weights``.

A start is checked whole before it writes anything: config, run directory writability, the
checkpoint to resume (verified against its recorded checksums; ``resume=auto`` falls back to
the newest one that verifies), its architecture and loader state, the data. Only then
(``_accept``) does rank 0 settle the checkpoint line (``checkpoint_lineage``), write this
start's config and open the metric files; a refused start leaves the run directory as it was.
On resume the config's optimizer and schedule settings are put over the restored state.

``finetune=lora`` (``lct_train.train.lora_run``): adapters are added to the meta model before
``parallelize``, the frozen base is filled at every start, checkpoints hold the adapters.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from lct_train.config.schema import TrainConfig
from lct_train.config.store import to_dict, to_yaml
from lct_train.core import checkpoint_layout as layout
from lct_train.core.errors import ConfigError
from lct_train.model.family import build_model
from lct_train.model.lora import is_adapter
from lct_train.parallel.dist import World, set_train_timeout
from lct_train.parallel.parallelize import materialize, parallelize
from lct_train.train import checkpoint as ckpt_lib
from lct_train.train import checkpoint_integrity as integrity
from lct_train.train import checkpoint_lineage as lineage
from lct_train.train import lora_run, run_files
from lct_train.train.batches import LoaderBatches, SyntheticBatches
from lct_train.train.ema import EMA
from lct_train.train.flops import FlopCounter, peak_flops
from lct_train.train.init_weights import check_same_architecture, init_weights, model_fingerprint
from lct_train.train.metrics import MetricsLogger, reduce_step_metrics
from lct_train.train.optim import apply_config, build_lr_scheduler, build_optimizer, clip_grad_norm
from lct_train.train.step import StepInputs, forward_backward

logger = logging.getLogger(__name__)


def load_failure(err: BaseException) -> str:
    """One line for a failed checkpoint load: DCP wraps each rank's exception, with its
    traceback, into one ``CheckpointException``; the first rank's own error is the cause."""
    if isinstance(err, CheckpointException) and err.failures:
        rank, (cause, _) = next(iter(sorted(err.failures.items())))
        err = cause
        prefix = f"rank {rank}: "
    else:
        prefix = ""
    first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    return f"{prefix}{type(err).__name__}: {first}".rstrip(": ")


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm was NaN/inf and ``loss.nonfinite=stop`` (or too many skips)."""


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               timeout=10, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Trainer:
    def __init__(self, cfg: TrainConfig, world: World):
        self.cfg, self.world = cfg, world
        self.run_dir = Path(cfg.run_dir)
        self.model_cfg = cfg.model
        self.state = {"step": 0, "skipped_steps": 0, "consecutive_skips": 0}
        self.started = False  # a first step went through (train() may be called again)
        run_files.check_writable(self.run_dir)  # nothing is written before _accept
        self.git_revision = git_revision() if world.is_main else ""
        self.ckpt = ckpt_lib.CheckpointManager(self.run_dir, cfg.checkpoint.keep_last,
                                               cfg.checkpoint.keep_every, world.rank, world.size)

        torch.manual_seed(cfg.seed)
        model = build_model(self.model_cfg, "meta")  # no rank ever holds the full model
        self.lora = cfg.finetune.mode == "lora"
        if self.lora:  # adapters on the bare model, base frozen (lct_train.train.lora_run)
            lora_layers = lora_run.add_adapters(model, cfg)
        self.flops = FlopCounter(model, self.model_cfg)
        self.model = materialize(parallelize(model, world.mesh, cfg.parallel), world.device)
        source = self._fill_weights()
        if self.lora and source is not None:
            source = f"{source}; LoRA on {lora_layers} layers, rank {cfg.finetune.rank}, " \
                     f"{lora_run.adapter_count(self.model):,} adapter parameters"
        self.optimizer = build_optimizer(self.model, cfg.optim, world.device)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.ema = EMA(self.model, cfg.optim.ema_decay, cfg.optim.ema_every) \
            if cfg.optim.ema_decay > 0 else None
        self.batches = self._build_batches()
        self.metrics = MetricsLogger(cfg.logging, world.is_main, cfg.steps, world.size,
                                     peak_flops(cfg.logging.peak_tflops, world.device))
        self.step_inputs = StepInputs.from_config(cfg, self.model_cfg, world, world.device)
        self.validator = None
        if cfg.eval.every > 0:
            from lct_train.train.validation import Validator

            self.validator = Validator(cfg.eval, self.model_cfg, self.step_inputs, world,
                                       self.run_dir)
        self._start(source)

    # ----------------------------------------------------------------------------- setup
    def _build_batches(self):
        cfg, w = self.cfg, self.world
        if cfg.data_source == "synthetic":
            return SyntheticBatches(self.model_cfg, cfg.synthetic, cfg.seed, w.dp_rank,
                                    cfg.optim.grad_accum)
        return LoaderBatches(cfg.data, self.model_cfg, w.dp_rank, w.dp_size, cfg.optim.grad_accum)

    def _resume_path(self) -> Path | None:
        """The checkpoint this start continues from (verified), or None."""
        resume, w = self.cfg.resume, self.world
        if resume == "none":
            return None
        if resume == "auto":
            return self._newest_verified()
        try:
            path = layout.resolve_checkpoint(resume, "resume")
        except layout.CheckpointLayoutError as err:
            raise ConfigError("resume", str(err).removeprefix("resume: ")) from err
        problem = integrity.verify(path, w.rank, w.size)
        if problem is not None:
            raise ConfigError("resume", f"checkpoint {path} is damaged: {problem}")
        return path

    def _newest_verified(self) -> Path | None:
        """``resume=auto``: the newest checkpoint of the run that verifies, with a warning for
        each damaged one passed over (they are set aside when the start is accepted)."""
        damaged = []
        for _, path in lineage.candidates(self.ckpt.root):
            problem = integrity.verify(path, self.world.rank, self.world.size)
            if problem is None:
                return path
            damaged.append(f"{path.name}: {problem}")
            if self.world.is_main:  # printed like every start-up line (logging may be off)
                print(f"lct-train: WARNING: checkpoint {path} is damaged ({problem}): falling "
                      "back to an older one", file=sys.stderr, flush=True)
        if damaged:
            raise ConfigError("resume", f"no checkpoint of {self.ckpt.root} verifies ("
                              + "; ".join(damaged) + "); resume=none starts over")
        return None

    def _fill_weights(self) -> str | None:
        """Initial weights into the materialised model, unless the run resumes (then the
        checkpoint fills model, optimizer and EMA in ``_start``; a LoRA run's base is filled
        either way, its adapters come from the checkpoint). Returns the log description."""
        self.resume_from = self._resume_path()
        if self.lora:  # the frozen base is not in the run's checkpoints: loaded at every start
            source, self.lora_base = lora_run.fill(self.model, self.cfg)
            self.base_checksum = self._base_checksum()
            return source if self.resume_from is None else None
        if self.resume_from is not None:
            return None
        return init_weights(self.model, self.cfg.stage, self.model_cfg, self.cfg.seed)

    def _base_checksum(self) -> list[float]:
        return lora_run.base_checksum(self.model, self.world.device,
                                      self.cfg.parallel.dp_replicate)

    def _start(self, source: str | None) -> None:
        changes = []
        if self.resume_from is not None:
            self.load(self.resume_from)
            changes = apply_config(self.optimizer, self.scheduler, self.cfg.optim)
        self._accept(source)
        if self.resume_from is not None:
            source = f"resumed from {self.resume_from} at step {self.state['step']}"
        if changes:
            self.metrics.text("lct-train: the config's optimizer settings replace the "
                              f"checkpoint's: {', '.join(changes)}")
        fingerprint = model_fingerprint(self.model, self.world.device,
                                        self.cfg.parallel.dp_replicate)
        self.metrics.text(f"lct-train: stage {self.cfg.stage.name} ({self.cfg.stage.mask}), "
                          f"{self.world.size} rank(s) on {self.world.device.type}, weights: "
                          f"{source}; weight sum {fingerprint:.6e}")

    def _accept(self, source: str | None) -> None:
        """Every check passed: rank 0 settles the checkpoint line, writes this start's config
        and opens the metric files. A write that fails is a one-line error on every rank."""
        error, messages = None, []
        if self.world.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.resume_from, messages = lineage.settle(self.ckpt.root, self.state["step"],
                                                            self.resume_from)
                weights = source or f"resumed from {self.resume_from} at step {self.state['step']}"
                run_files.save_start_config(self.run_dir, to_yaml(self.cfg), weights)
                self.metrics.open(self.run_dir)
            except OSError as err:
                error = f"cannot write in {self.run_dir}: {err}"
        box = [error, self.resume_from]
        if self.world.size > 1:
            dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise ConfigError("run_dir", box[0])
        self.resume_from = box[1]
        for message in messages:
            self.metrics.text(message)

    # ----------------------------------------------------------------------------- checkpoint
    def _states(self, per_rank: bool = True, loader: bool = True) -> dict:
        w = self.world
        states = {
            "model": ckpt_lib.ModelState(self.model, is_adapter if self.lora else None),
            "optimizer": ckpt_lib.OptimizerState(self.model, self.optimizer),
            "lr_scheduler": self.scheduler,
            "train_state": ckpt_lib.DictState(lambda: dict(self.state), self.state.update),
        }
        if self.ema is not None:
            states["ema"] = self.ema
        if per_rank:
            states["rng"] = ckpt_lib.PerRankState(w.dp_rank, w.dp_size, ckpt_lib.rng_state,
                                                  ckpt_lib.set_rng_state)
        if loader and self.batches.stateful:
            states["dataloader"] = self.batches
        return states

    def save(self) -> None:
        step = self.state["step"]
        states = self._states()
        meta = {"stage": self.cfg.stage.name, "mask": self.cfg.stage.mask,
                "world_size": self.world.size, "dp_world_size": self.world.dp_size,
                "git_revision": self.git_revision, "keys": sorted(states),
                "config": to_dict(self.cfg),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.lora:  # the base it was trained on (checksum now: proves it is unchanged)
            meta[lora_run.META_KEY] = lora_run.checkpoint_meta(self.cfg, self.lora_base,
                                                                self._base_checksum())
        path = self.ckpt.save(step, states, meta)
        self.metrics.text(f"lct-train: saved {path}")

    def load(self, path: Path) -> None:
        meta = layout.read_meta(path)
        check_same_architecture(self.model_cfg, path)
        if self.lora:
            lora_run.check_resume(meta, self.cfg, self.base_checksum, path)
        else:
            lora_run.check_not_lora(meta, path)
        same_world = meta["dp_world_size"] == self.world.dp_size
        loader = self.batches.stateful
        if loader and not same_world:
            loader = self._loader_policy_on_world_change(meta["dp_world_size"])
        states = self._states(per_rank=same_world, loader=loader and same_world)
        saved = set(meta["keys"])
        fresh_ema = "ema" in states and "ema" not in saved
        if fresh_ema:
            del states["ema"]
        try:
            self.ckpt.load(path, states)
        except (Exception, CheckpointException) as err:  # a refusal: nothing written yet
            raise ConfigError("resume", f"cannot load {path}: {load_failure(err)}") from err
        if fresh_ema:  # EMA switched on at resume: start it from the loaded weights
            self.ema = EMA(self.model, self.cfg.optim.ema_decay, self.cfg.optim.ema_every)
        if loader and not same_world:
            # The loader decides (data.resume_policy): reshuffle, or refuse. Rank 0's entry
            # tells it how far the old run got.
            state = {"world_size": 0, "num_workers": 0, "dp_rank_0": ""}
            self.ckpt.load(path, {"dataloader": state})
            self.batches.load_state_dict(state)

    def _loader_policy_on_world_change(self, saved: int) -> bool:
        """Whether to hand the old loader state to the loader on a world-size change."""
        if self.cfg.checkpoint.skip_loader_state_on_world_change:
            self.metrics.text(f"lct-train: checkpoint has {saved} data-parallel ranks, now "
                              f"{self.world.dp_size}: loader streams restart "
                              "(checkpoint.skip_loader_state_on_world_change=true)")
            return False
        if self.cfg.data.resume_policy == "reshuffle":
            return True
        raise ConfigError("checkpoint.skip_loader_state_on_world_change",
                          f"the checkpoint was written by {saved} data-parallel ranks, this run "
                          f"has {self.world.dp_size}: the loader position cannot be restored. "
                          "Set checkpoint.skip_loader_state_on_world_change=true (restart the "
                          "streams) or data.resume_policy=reshuffle")

    def _should_save(self, step: int) -> bool:
        c = self.cfg.checkpoint
        if not c.enabled:
            return False
        return (c.every > 0 and step % c.every == 0) or (c.save_last and step == self.cfg.steps)

    # ----------------------------------------------------------------------------- loop
    def train(self) -> list[dict]:
        records = []
        step_started = time.perf_counter()
        while self.state["step"] < self.cfg.steps:
            step = self.state["step"] + 1
            micro = self.batches.next_step(step)
            vector, per_micro = forward_backward(self.model, micro, step, self.step_inputs,
                                                 self.flops)
            grad_norm = clip_grad_norm(self.model, self.cfg.optim.grad_clip)
            m = reduce_step_metrics(vector, grad_norm, self.cfg.logging.timestep_buckets)
            finite = math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])
            lr = self.scheduler.get_last_lr()[0]
            if finite:
                self.optimizer.step()
                self.state["consecutive_skips"] = 0
            else:
                self._nonfinite(step, micro, per_micro)
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.state["step"] = step
            if finite and self.ema is not None:
                self.ema.update(step)
            now = time.perf_counter()
            records.append(self.metrics.record(step, m, lr, now - step_started,
                                               self.world.device, skipped=not finite))
            if not self.started:  # first step of this trainer: start-up is over
                set_train_timeout(self.world, self.cfg.parallel.train_timeout_s)
                self.started = True
            if self._should_save(step):
                self.save()
            if self.validator is not None and step % self.cfg.eval.every == 0:
                self.metrics.validation(step, *self.validator.run(self.model, step))
            if self.cfg.debug.step_delay_s:
                time.sleep(self.cfg.debug.step_delay_s)
            step_started = time.perf_counter()
        self.metrics.close()
        return records

    def _nonfinite(self, step: int, micro, per_micro: torch.Tensor) -> None:
        """Logs the offending scene keys (every rank, its own), then skips or stops."""
        self.state["skipped_steps"] += 1
        self.state["consecutive_skips"] += 1
        for m, (mb, value) in enumerate(zip(micro, per_micro.tolist())):
            if not math.isfinite(value):
                logger.error("rank %d step %d micro-batch %d: non-finite loss %s, scenes %s",
                             self.world.rank, step, m, value, mb.keys)
        policy = self.cfg.loss.nonfinite
        too_many = self.state["consecutive_skips"] > self.cfg.loss.max_consecutive_skips
        if policy == "stop" or too_many:
            keys = [k for mb in micro for k in mb.keys]
            raise NonFiniteLossError(f"step {step}: non-finite loss or gradient norm "
                                     f"(policy {policy}, {self.state['consecutive_skips']} in a "
                                     f"row); this rank's scenes: {keys}")
        self.metrics.text(f"lct-train: step {step} skipped (non-finite loss/grad norm)")
