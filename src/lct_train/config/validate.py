"""Validation of the ``TrainConfig`` groups (run by ``TrainConfig.__post_init__``): ranges and
choices, errors name the key.

Types and unknown keys are already checked by OmegaConf when the config is composed; this
module checks what types cannot say (a learning rate is positive, a schedule is one of a few
names, ...). ``model`` and ``data`` validate themselves (their ``__post_init__``). Every failure
raises ``ConfigError`` whose message starts with the dotted key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from lct_train.core.dtypes import TRAIN_DTYPES
from lct_train.core.errors import ConfigError
from lct_train.model.layout import MASKS

# torch.compile backends of parallel.compile_backend ("aot_eager" / "eager": no code generation)
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def _choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate_optim(c: Any) -> None:
    _positive("optim.lr", c.lr, allow_zero=True)
    for i, beta in enumerate(c.betas):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"optim.betas[{i}]", f"must be in [0, 1), got {beta}")
    _positive("optim.eps", c.eps)
    _positive("optim.weight_decay", c.weight_decay, allow_zero=True)
    _choice("optim.implementation", c.implementation, ("auto", "fused", "foreach", "for_loop"))
    _positive("optim.warmup_steps", c.warmup_steps, allow_zero=True)
    _choice("optim.schedule", c.schedule, ("constant", "cosine"))
    if not 0.0 <= c.min_lr_ratio <= 1.0:
        raise ConfigError("optim.min_lr_ratio", f"must be in [0, 1], got {c.min_lr_ratio}")
    _positive("optim.grad_accum", c.grad_accum)
    if not 0.0 <= c.ema_decay < 1.0:
        raise ConfigError("optim.ema_decay", f"must be in [0, 1), got {c.ema_decay}")
    _positive("optim.ema_every", c.ema_every)


def validate_parallel(c: Any) -> None:
    _choice("parallel.backend", c.backend, ("auto", "nccl", "gloo"))
    _choice("parallel.device", c.device, ("auto", "cuda", "cpu"))
    _positive("parallel.dp_replicate", c.dp_replicate)
    if c.dp_shard != -1 and c.dp_shard < 1:
        raise ConfigError("parallel.dp_shard", f"must be -1 (auto) or >= 1, got {c.dp_shard}")
    _positive("parallel.sp_degree", c.sp_degree)
    _choice("parallel.param_dtype", c.param_dtype, TRAIN_DTYPES)
    _choice("parallel.reduce_dtype", c.reduce_dtype, TRAIN_DTYPES)
    _choice("parallel.activation_checkpoint", c.activation_checkpoint, ("none", "full"))
    _choice("parallel.compile_backend", c.compile_backend, COMPILE_BACKENDS)
    _positive("parallel.init_timeout_s", c.init_timeout_s)
    _positive("parallel.train_timeout_s", c.train_timeout_s)


def validate_checkpoint(c: Any) -> None:
    _positive("checkpoint.every", c.every, allow_zero=True)
    _positive("checkpoint.keep_last", c.keep_last)
    _positive("checkpoint.keep_every", c.keep_every, allow_zero=True)


def validate_logging(c: Any) -> None:
    _positive("logging.every", c.every)
    _positive("logging.timestep_buckets", c.timestep_buckets)
    _positive("logging.peak_tflops", c.peak_tflops, allow_zero=True)
    _positive("logging.progress_bar_width", c.progress_bar_width, allow_zero=True)


def validate_stage(c: Any) -> None:
    _choice("stage.name", c.name, ("lct", "causal_ft"))
    _choice("stage.mask", c.mask, MASKS)
    _choice("stage.init_weights", c.init_weights, ("model", "ema"))
    if not c.init_from:
        raise ConfigError("stage.init_from", "is empty (use 'scratch', 'auto' or a path)")
    if c.init_from == "auto" and not c.init_run:
        raise ConfigError("stage.init_run", "must name the previous stage's run directory "
                          "when stage.init_from=auto")


def validate_loss(c: Any) -> None:
    _positive("loss.timestep_std", c.timestep_std)
    if c.timestep_shift is not None:
        _positive("loss.timestep_shift", c.timestep_shift)
    _choice("loss.nonfinite", c.nonfinite, ("skip", "stop"))
    _positive("loss.max_consecutive_skips", c.max_consecutive_skips)


def validate_synthetic(c: Any) -> None:
    _positive("synthetic.scenes_per_batch", c.scenes_per_batch)
    _positive("synthetic.max_shots", c.max_shots)
    for i, size in enumerate(c.max_grid):
        _positive(f"synthetic.max_grid[{i}]", size)
    _positive("synthetic.max_text_len", c.max_text_len)


def validate_eval(c: Any) -> None:
    _positive("eval.every", c.every, allow_zero=True)
    if c.every == 0:
        return
    if not c.data:
        raise ConfigError("eval.data", "is empty: set the held-out dataset directory "
                          "(lct-shards build) or eval.every=0")
    _positive("eval.scenes", c.scenes)
    if not c.timesteps or not all(0.0 < t <= 1.0 for t in c.timesteps):
        raise ConfigError("eval.timesteps", f"must be a non-empty list in (0, 1], got "
                          f"{list(c.timesteps)}")
    _positive("eval.sample_scenes", c.sample_scenes, allow_zero=True)
    _positive("eval.sample_steps", c.sample_steps)
    if c.guidance is not None and c.guidance < 1.0:
        raise ConfigError("eval.guidance", f"must be >= 1 (1 = no guidance), got {c.guidance}")
    if c.shift is not None:
        _positive("eval.shift", c.shift)


def validate_finetune(c: Any) -> None:
    _choice("finetune.mode", c.mode, ("full", "lora"))
    _positive("finetune.rank", c.rank)
    _positive("finetune.alpha", c.alpha)
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError("finetune.dropout", f"must be in [0, 1), got {c.dropout}")
    for i, pattern in enumerate(c.targets):
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"finetune.targets[{i}]", f"{pattern!r} is not a regular "
                              f"expression: {err}") from err
    _choice("finetune.base_dtype", c.base_dtype, ("compute", *TRAIN_DTYPES))
    _choice("finetune.from_lora", c.from_lora, ("continue", "merge"))


def validate_lora_run(cfg: Any) -> None:
    """Options only the full fine-tuning path has, refused with ``finetune=lora``."""
    if cfg.finetune.mode != "lora":
        return
    if cfg.optim.ema_decay > 0:
        raise ConfigError("optim.ema_decay", "the EMA of the weights is full fine-tuning only: "
                          "set optim.ema_decay=0 with finetune=lora")
    if cfg.finetune.dropout > 0 and cfg.parallel.activation_checkpoint != "none":
        raise ConfigError("finetune.dropout", "> 0 needs parallel.activation_checkpoint=none "
                          "(the recomputed forward would draw other dropout masks)")


def validate(cfg: Any) -> None:
    """Checks the groups of a ``TrainConfig``; raises ``ConfigError`` naming the key."""
    validate_optim(cfg.optim)
    validate_parallel(cfg.parallel)
    heads = cfg.model.num_heads
    if heads % cfg.parallel.sp_degree:
        raise ConfigError("parallel.sp_degree", f"{cfg.parallel.sp_degree} does not divide "
                          f"model.num_heads ({heads})")
    validate_checkpoint(cfg.checkpoint)
    validate_logging(cfg.logging)
    validate_stage(cfg.stage)
    if cfg.stage.mask == "isolated" and cfg.model.attn_backend == "flash-varlen":
        raise ConfigError("model.attn_backend", "flash-varlen cannot express stage.mask=isolated "
                          "(two key intervals per row): use flex, reference or auto")
    validate_loss(cfg.loss)
    validate_synthetic(cfg.synthetic)
    validate_eval(cfg.eval)
    validate_finetune(cfg.finetune)
    validate_lora_run(cfg)
    _choice("data_source", cfg.data_source, ("shards", "synthetic"))
    _positive("steps", cfg.steps)
    _positive("seed", cfg.seed, allow_zero=True)
    if not cfg.resume:
        raise ConfigError("resume", "is empty (use 'auto', 'none' or a checkpoint directory)")
    _positive("debug.nonfinite_at_step", cfg.debug.nonfinite_at_step, allow_zero=True)
    if cfg.debug.step_delay_s < 0:
        raise ConfigError("debug.step_delay_s", f"must be >= 0, got {cfg.debug.step_delay_s}")
