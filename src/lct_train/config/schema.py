"""The training config schema: one dataclass per Hydra group, plus the top-level ``TrainConfig``.

Every key a run can take is declared here with its type and default; Hydra merges the YAML
tree of ``conf/`` into these dataclasses, so a key that is not declared is rejected when the
config is composed, and ``compose_config`` turns the result into these typed objects.

Each config is validated in one place, when its object is built, and every error is a
``ConfigError`` naming the full dotted key: the model config (``ModelConfig`` or ``WanConfig``,
by its ``family`` key) and ``DataConfig`` (the model and data packages' own dataclasses) in
their ``__post_init__``, the groups declared here by
``lct_train.config.validate`` from ``TrainConfig.__post_init__``, which also copies the model's
geometry into the data config (the one place it is injected).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lct_train.config.validate import validate
from lct_train.data.config import DataConfig
from lct_train.model.config import ModelConfig
from lct_train.model.family import config_from_dict
from lct_train.model.wan.config import WanConfig


@dataclass
class OptimConfig:
    """AdamW, the learning-rate schedule, gradient clipping and the EMA of the weights."""

    lr: float = 1.0e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    weight_decay: float = 0.0
    # 1-D parameters (biases, norm scales) get no weight decay.
    no_decay_1d: bool = True
    # "auto": fused AdamW on CUDA and CPU (one kernel per dtype group), foreach elsewhere.
    implementation: str = "auto"
    warmup_steps: int = 0
    # "constant" (after warm-up) or "cosine" (down to lr * min_lr_ratio at the last step).
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    # Clip the global gradient norm to this value; <= 0 computes the norm without clipping.
    grad_clip: float = 1.0
    # Micro-batches per optimizer step on every data-parallel rank.
    grad_accum: int = 1
    # EMA of the weights (kept sharded like the parameters); decay 0 disables it.
    ema_decay: float = 0.0
    ema_every: int = 1


@dataclass
class ParallelConfig:
    """Process groups, FSDP2 / HSDP, mixed precision, activation checkpointing, compile."""

    # "auto": nccl on CUDA, gloo on CPU.
    backend: str = "auto"
    # "auto": cuda when available, else cpu.
    device: str = "auto"
    # HSDP: replicate groups x shard groups; -1 = world_size / dp_replicate.
    dp_replicate: int = 1
    dp_shard: int = -1
    # Ulysses sequence parallelism: ranks per packed micro-batch (divides model.num_heads and
    # the world size); world = dp_replicate x dp_shard x sp_degree.
    sp_degree: int = 1
    # FSDP2 mixed precision: parameter (compute) dtype and gradient reduce dtype.
    param_dtype: str = "bfloat16"
    reduce_dtype: str = "float32"
    # Re-shard parameters after forward (saves memory, costs an all-gather in backward).
    reshard_after_forward: bool = True
    # Gradient accumulation: false reduce-scatters every micro-batch (gradients stay sharded);
    # true syncs on the last micro-batch only (every rank then holds the whole model's
    # unsharded fp32 gradients between micro-batches).
    defer_grad_sync: bool = False
    # Activation checkpointing of every block: "none" | "full".
    activation_checkpoint: str = "none"
    # torch.compile of every block (applied after AC, before FSDP), and its backend
    # ("inductor"; "aot_eager" / "eager" trace without code generation, for debugging).
    compile: bool = False
    compile_backend: str = "inductor"
    # Collective timeouts: long while starting (loading, first step), short afterwards.
    init_timeout_s: int = 600
    train_timeout_s: int = 300


@dataclass
class CheckpointConfig:
    """DCP checkpoints: cadence, retention, resume policy."""

    enabled: bool = True
    # Save every N steps (and at the last step); 0 = only at the last step.
    every: int = 500
    # Keep the newest K checkpoints, plus every one whose step is a multiple of keep_every.
    keep_last: int = 3
    keep_every: int = 0
    # Resuming on another data-parallel size: the loader's per-rank state cannot be mapped;
    # true restarts the loader streams (weights, optimizer, step are still restored),
    # false refuses to resume.
    skip_loader_state_on_world_change: bool = False
    # Also save at the last step.
    save_last: bool = True


@dataclass
class LoggingConfig:
    """Console, TensorBoard, JSONL metrics, MFU."""

    every: int = 10
    tensorboard: bool = True
    # Append one JSON record per logged step to <run_dir>/metrics.jsonl.
    jsonl: bool = True
    console: bool = True
    # Loss by timestep bucket: number of equal-width buckets of t in [0, 1].
    timestep_buckets: int = 4
    # Peak dense bf16 TFLOP/s of one device for MFU; 0 = auto (known GPUs; n/a on CPU).
    peak_tflops: float = 0.0
    progress_bar_width: int = 20


@dataclass
class StageConfig:
    """Which training stage runs and where its initial weights come from (SPEC §6)."""

    name: str = MISSING
    # "bidirectional" (LCT, stage 1), "causal" (context-causal FT, stage 2) or "isolated"
    # (the ablation baseline: a shot sees its own group and the global group only).
    mask: str = MISSING
    # "scratch" | "auto" (newest checkpoint of init_run) | a .safetensors file |
    # a checkpoint directory (step-N).
    init_from: str = "scratch"
    # Run directory of the previous stage, used by init_from=auto.
    init_run: str = ""
    # Which weights of a training checkpoint to start from: "model" or "ema".
    init_weights: str = "model"


@dataclass
class LossConfig:
    """Per-shot timesteps and loss (SPEC §5)."""

    # Per shot t = sigmoid(N(timestep_mean, timestep_std)); global groups use t = 0.
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    # SD3-style shift s t / (1 + (s - 1) t) of the sampled t (1 = none); null: the model
    # preset's sampling shift (model.sampling.shift, hunyuan-video 7.0), else 1 (docs/method.md).
    timestep_shift: float | None = None
    # Non-finite loss or gradient norm: "skip" the update or "stop" the run.
    nonfinite: str = "skip"
    # Stop anyway after this many consecutive skipped steps.
    max_consecutive_skips: int = 10
    # Distilled-guidance value fed to models with guidance_embeds (HunyuanVideo); else unused.
    # 1.0: the regression target is the plain conditional velocity, which a distilled model
    # gives at guidance 1 (docs/method.md "Guidance-distilled models").
    guidance: float = 1.0


@dataclass
class SyntheticDataConfig:
    """In-memory random scenes (benchmarks, tests): a pure function of (seed, step, micro)."""

    scenes_per_batch: int = 2
    max_shots: int = 3
    # Per-shot latent-patch grid (F, H, W) is drawn from [1, max] per axis.
    max_grid: tuple[int, int, int] = (2, 4, 4)
    max_text_len: int = 8
    with_global: bool = True


@dataclass
class EvalConfig:
    """In-training validation (docs/eval.md), every ``every`` steps on every rank; 0 = off."""

    every: int = 0
    # Held-out scenes: a dataset directory written by lct-shards build.
    data: str = ""
    # Their ground truths (lct-shards synth's gt/): hidden-attribute scores of the sample.
    truth: str = ""
    # Validation loss over the first `scenes` held-out scenes (by key), shot k of a scene at
    # timesteps[k % len(timesteps)], noise from (seed, key).
    scenes: int = 16
    timesteps: tuple[float, ...] = (0.25, 0.5, 0.75)
    seed: int = 0
    # One joint-mode sample of the first `sample_scenes` held-out scenes from their prompts.
    sample_scenes: int = 1
    sample_steps: int = 16
    # CFG scale and timestep shift of the sample; null: the model preset's (model.sampling),
    # else 3.0. Embedded guidance (models with guidance_embeds): model.sampling's, else
    # loss.guidance.
    guidance: float | None = None
    shift: float | None = None


@dataclass
class FinetuneConfig:
    """Which weights train (``conf/finetune/``): all of them (``full``) or low-rank adapters
    (``lora``, ``lct_train.model.lora``) on a frozen base."""

    # "full" | "lora"
    mode: str = "full"
    rank: int = 16
    # Adapter output scaled by alpha / rank.
    alpha: float = 16.0
    # Dropout on the adapters' input (needs parallel.activation_checkpoint=none).
    dropout: float = 0.0
    # Regular expressions full-matched against the bare model's nn.Linear FQNs; every one must
    # match at least one layer. Empty: the model family's defaults (``lora_targets``).
    targets: tuple[str, ...] = ()
    # dtype the frozen base is held in: "compute" (= parallel.param_dtype) or a dtype name.
    base_dtype: str = "compute"
    # Start the adapters from a diffusers LoRA file (lct-convert export-lora, or another
    # trainer's); "" = fresh adapters (B = 0).
    init_lora: str = ""
    # stage.init_from is a LoRA run's checkpoint (stage 2 after a LoRA stage 1): "continue" its
    # adapters on its base, or "merge" them into the base and start new adapters.
    from_lora: str = "continue"


@dataclass
class DebugConfig:
    """Knobs for tests and debugging; leave at defaults for real runs."""

    # Sleep after every step (lets a test kill a running job at a chosen moment).
    step_delay_s: float = 0.0
    # Make the loss of this step NaN on every rank (tests of loss.nonfinite); 0 = never.
    nonfinite_at_step: int = 0


@dataclass
class TrainConfig:
    """The whole run. ``conf/train.yaml`` composes the groups over these defaults."""

    # A model preset (conf/model/): an MMDiT `ModelConfig`, or a `WanConfig` (`family: wan`).
    # Untyped for Hydra (the two families have different keys); the family's dataclass checks
    # every key when the config is built (`lct_train.model.family.config_from_dict`).
    model: Any = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    # Read the model config from an export (its folder or config.json) or a training checkpoint
    # (step-N or run directory) instead of the model= preset; model.* overrides still apply
    # (lct_train.config.model_from). "" = the preset.
    model_from: str = ""
    # Memory preset applied (informational; set by conf/memory/*.yaml).
    memory: str = "none"
    # "shards" (the scene loader, ``data`` config) or "synthetic" (``synthetic`` config).
    data_source: str = "shards"
    run_dir: str = MISSING
    steps: int = 1000
    seed: int = 0
    # "auto" (newest valid checkpoint of run_dir, else start), "none", or a step-N directory.
    resume: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig | WanConfig):  # a composed preset (a dict)
            self.model = config_from_dict(dict(self.model))
        validate(self)
        # The data geometry always follows the model (design.md §3).
        self.data = dataclasses.replace(self.data, patch_size=self.model.patch_size,
                                        dummy_grid=self.model.dummy_grid,
                                        window_text_len=self.model.window_text_len)
