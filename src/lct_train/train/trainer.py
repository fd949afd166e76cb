"""The training loop: builds model, optimizer, data and checkpointing from a config, resumes,
trains ``steps`` optimizer steps, saves.

Setup: the model is built on the meta device, parallelized (AC -> compile -> FSDP), given
storage for its shards only (``parallelize.materialize``), then filled by a resume or by the
initial weights; optimizer and EMA are built on the filled shards.

Per step (all ranks): fetch ``grad_accum`` micro-batches -> ``forward_backward`` -> clip ->
``reduce_step_metrics`` (the one host sync) -> step or skip (non-finite loss / grad norm, per
``loss.nonfinite``) -> EMA -> log -> checkpoint. Resume and initial weights are described in
``lct_train.train.checkpoint`` and ``lct_train.train.init_weights``.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from pathlib import Path

import torch

from lct_train.config.schema import TrainConfig
from lct_train.config.store import to_dict, to_yaml
from lct_train.core import checkpoint_layout as layout
from lct_train.core.dtypes import dtype_of
from lct_train.core.errors import ConfigError
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.dist import World, set_train_timeout
from lct_train.parallel.parallelize import materialize, parallelize
from lct_train.train import checkpoint as ckpt_lib
from lct_train.train.batches import LoaderBatches, SyntheticBatches
from lct_train.train.ema import EMA
from lct_train.train.flops import FlopCounter, peak_flops
from lct_train.train.init_weights import check_same_architecture, init_weights, model_fingerprint
from lct_train.train.metrics import MetricsLogger, reduce_step_metrics
from lct_train.train.optim import build_lr_scheduler, build_optimizer, clip_grad_norm
from lct_train.train.step import StepInputs, forward_backward

logger = logging.getLogger(__name__)


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
        if world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        self.git_revision = git_revision() if world.is_main else ""

        torch.manual_seed(cfg.seed)
        with torch.device("meta"):  # no rank ever holds the full model
            model = LCTModel(self.model_cfg)
        self.flops = FlopCounter(model, self.model_cfg)
        self.model = materialize(parallelize(model, world.mesh, cfg.parallel), world.device)
        source = self._fill_weights()
        self.optimizer = build_optimizer(self.model, cfg.optim, world.device)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.ema = EMA(self.model, cfg.optim.ema_decay, cfg.optim.ema_every) \
            if cfg.optim.ema_decay > 0 else None
        self.batches = self._build_batches()
        self.ckpt = ckpt_lib.CheckpointManager(self.run_dir, cfg.checkpoint.keep_last,
                                               cfg.checkpoint.keep_every, world.rank)
        self.metrics = MetricsLogger(self.run_dir, cfg.logging, world.is_main, cfg.steps,
                                     world.size, peak_flops(cfg.logging.peak_tflops, world.device))
        self.step_inputs = StepInputs(
            device=world.device, compute_dtype=dtype_of(cfg.parallel.param_dtype),
            mask=cfg.stage.mask, text_rope=self.model_cfg.text_rope, seed=cfg.seed,
            dp_rank=world.dp_rank, dp_size=world.dp_size, grad_accum=cfg.optim.grad_accum,
            t_mean=cfg.loss.timestep_mean, t_std=cfg.loss.timestep_std,
            t_shift=cfg.loss.timestep_shift,
            guidance=cfg.loss.guidance if self.model_cfg.guidance_embeds else None,
            buckets=cfg.logging.timestep_buckets, nonfinite_at_step=cfg.debug.nonfinite_at_step)
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
        resume = self.cfg.resume
        if resume == "none":
            return None
        if resume == "auto":
            return layout.newest_checkpoint(self.run_dir)
        return layout.resolve_checkpoint(resume, "resume")

    def _fill_weights(self) -> str | None:
        """Initial weights into the materialised model, unless the run resumes (then the
        checkpoint fills model, optimizer and EMA in ``_start``). Returns the log description."""
        self.resume_from = self._resume_path()
        if self.resume_from is not None:
            return None
        return init_weights(self.model, self.cfg.stage, self.model_cfg, self.world.is_main,
                            self.cfg.seed)

    def _start(self, source: str | None) -> None:
        if self.resume_from is not None:
            self.load(self.resume_from)
            source = f"resumed from {self.resume_from} at step {self.state['step']}"
        fingerprint = model_fingerprint(self.model, self.world.device,
                                        self.cfg.parallel.dp_replicate)
        self.metrics.text(f"lct-train: stage {self.cfg.stage.name} ({self.cfg.stage.mask}), "
                          f"{self.world.size} rank(s) on {self.world.device.type}, weights: "
                          f"{source}; weight sum {fingerprint:.6e}")

    # ----------------------------------------------------------------------------- checkpoint
    def _states(self, per_rank: bool = True, loader: bool = True) -> dict:
        w = self.world
        states = {
            "model": ckpt_lib.ModelState(self.model),
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
        path = self.ckpt.save(step, states, meta)
        self.metrics.text(f"lct-train: saved {path}")

    def load(self, path: Path) -> None:
        meta = layout.read_meta(path)
        check_same_architecture(self.model_cfg, path)
        same_world = meta["dp_world_size"] == self.world.dp_size
        loader = self.batches.stateful
        if loader and not same_world:
            loader = self._loader_policy_on_world_change(meta["dp_world_size"])
        states = self._states(per_rank=same_world, loader=loader and same_world)
        saved = set(meta["keys"])
        fresh_ema = "ema" in states and "ema" not in saved
        if fresh_ema:
            del states["ema"]
        self.ckpt.load(path, states)
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
            if len(records) == 1:  # first step of this process: start-up is over
                set_train_timeout(self.world, self.cfg.parallel.train_timeout_s)
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
