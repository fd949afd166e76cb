"""One optimizer step's forward/backward over its micro-batches, with no host sync.

``forward_backward`` runs the ``grad_accum`` micro-batches of this rank, leaves the gradients
of the global-mean loss in the parameters, and returns device-side sums for the metrics.

Gradient sync under accumulation (torchtitan's default): FSDP reduce-scatters every
micro-batch's gradients and accumulates them *sharded*, so a rank never holds more than one
FSDP unit's unsharded gradients. ``parallel.defer_grad_sync=true`` skips the reduce-scatter
until the last micro-batch (less communication, but every rank then keeps the whole model's
unsharded fp32 gradients between micro-batches: 4 bytes x parameters).

Metadata: each micro-batch's ``PackedMeta`` is built on the host and moved in one pinned,
non-blocking copy (``PackedMeta.to``); the kernel plans are built from host integers and moved
the same way. Nothing in here waits for the device. The caller clips, reduces the metrics (one
all-reduce) and reads them (the step's one host sync) before deciding to step or skip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lct_train.core.dtypes import dtype_of
from lct_train.data.packing import PackedScenes
from lct_train.model.layout import PackedMeta, SceneSpec
from lct_train.parallel.sp_inputs import local_inputs
from lct_train.parallel.ulysses import SPGroup
from lct_train.train.batches import global_micro_index
from lct_train.train.flops import FlopCounter
from lct_train.train.loss import bucket_sums, micro_generator, noise_batch, shot_losses

# Layout of the per-step metric vector (then the timestep-bucket sums and counts).
METRIC_FIELDS = ("loss_sum", "shots", "tokens", "scenes", "packing_sum", "micro_batches",
                 "bad_samples", "text_cut_samples", "flops")


def training_shift(loss_cfg, model_cfg) -> float:
    """``loss.timestep_shift``, else the model preset's sampling shift, else 1 (no shift)."""
    if loss_cfg.timestep_shift is not None:
        return loss_cfg.timestep_shift
    return model_cfg.sampling.shift or 1.0


@dataclass
class StepInputs:
    """What the step needs besides the model: settings fixed for the run."""

    device: torch.device
    compute_dtype: torch.dtype
    mask: str
    model_cfg: object  # the model config (its family's `build_meta`, `takes_pooled`)
    seed: int
    dp_rank: int
    dp_size: int
    grad_accum: int
    t_mean: float
    t_std: float
    t_shift: float
    guidance: float | None
    buckets: int
    defer_grad_sync: bool = False  # reduce-scatter on the last micro-batch only
    nonfinite_at_step: int = 0  # debug: poison this step's loss
    sp: SPGroup | None = None  # sequence parallelism: this rank's group (None: sp_degree 1)

    @classmethod
    def from_config(cls, cfg, model_cfg, world, device: torch.device) -> StepInputs:
        """The step settings of run config ``cfg`` on ``world`` (the trainer and lct-estimate
        build theirs here)."""
        return cls(
            device=device, compute_dtype=dtype_of(cfg.parallel.param_dtype),
            mask=cfg.stage.mask, model_cfg=model_cfg, seed=cfg.seed,
            dp_rank=world.dp_rank, dp_size=world.dp_size, grad_accum=cfg.optim.grad_accum,
            t_mean=cfg.loss.timestep_mean, t_std=cfg.loss.timestep_std,
            t_shift=training_shift(cfg.loss, model_cfg),
            guidance=cfg.loss.guidance if model_cfg.guidance_embeds else None,
            buckets=cfg.logging.timestep_buckets, nonfinite_at_step=cfg.debug.nonfinite_at_step,
            defer_grad_sync=cfg.parallel.defer_grad_sync, sp=world.sp)

    @property
    def sp_size(self) -> int:
        return 1 if self.sp is None else self.sp.size

    @property
    def owns_batch(self) -> float:
        """1 on the rank that reports a micro-batch's counts (SP rank 0), else 0: counts of a
        batch that a whole SP group works on are summed once."""
        return 1.0 if self.sp is None or self.sp.rank == 0 else 0.0


def _local_shots(micro: list[PackedScenes]) -> int:
    return sum(spec.num_shots for mb in micro for spec in mb.specs)


def _bad_samples(mb: PackedScenes) -> float:
    stats = mb.stats
    return stats.get("loader/bad", 0.0) + stats.get("loader/skipped_over_budget", 0.0)


def host_meta(specs: list[SceneSpec], inp: StepInputs) -> PackedMeta:
    """A micro-batch's metadata, built on the host (moved to the device by the step)."""
    return inp.model_cfg.build_meta(specs, mask=inp.mask)


def noised_shot_losses(model: nn.Module, mb: PackedScenes, meta: PackedMeta, noised,
                       inp: StepInputs) -> torch.Tensor:
    """Per-shot loss sums of the model on a noised micro-batch (``meta`` on the device; the
    training step and the validation loss). Under sequence parallelism the forward runs this
    rank's slice and the sums are this rank's part of each shot's loss."""
    dev = inp.device
    local, (z_t, target), text = local_inputs(meta, inp.sp, (noised.z_t, noised.target),
                                              mb.text.to(dev, non_blocking=True))
    guidance = None
    if inp.guidance is not None:
        guidance = torch.full((meta.num_groups,), inp.guidance, device=dev)
    pooled = None
    if inp.model_cfg.takes_pooled:
        pooled = mb.pooled.to(dev, non_blocking=True).to(inp.compute_dtype)
    pred = model(z_t.to(inp.compute_dtype), text.to(inp.compute_dtype), pooled, noised.t_group,
                 local, guidance=guidance)
    return shot_losses(pred, target, local)


def forward_backward(
    model: nn.Module,
    micro: list[PackedScenes],
    step: int,
    inp: StepInputs,
    flops: FlopCounter,
    metas: list[PackedMeta] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(metric vector [len(METRIC_FIELDS) + 2B] float64, per-micro loss sums)``.

    Both are local to this rank; the metric vector is meant to be all-reduced (SUM). Under
    sequence parallelism each SP rank adds its part of every shot's loss; the batch's counts
    (shots, tokens, ...) come from SP rank 0 only. ``metas``: the micro-batches' host metadata
    when the caller built it already.
    """
    dev = inp.device
    local_shots = float(_local_shots(micro))
    # Global shot count: known on the host per rank, summed on the device (no sync).
    global_shots = torch.full((), local_shots * inp.owns_batch, device=dev)
    dist.all_reduce(global_shots)
    # FSDP averages gradients over all ranks (dp x sp); the loss is a global mean: cancel it.
    scale = inp.dp_size * inp.sp_size / global_shots
    loss_sum = torch.zeros((), device=dev)
    per_micro = torch.zeros(len(micro), device=dev)
    buckets = torch.zeros(2, inp.buckets, device=dev)
    train_flops = 0
    for m, mb in enumerate(micro):
        if inp.defer_grad_sync:
            model.set_requires_gradient_sync(m == len(micro) - 1)
        meta = (metas[m] if metas is not None else host_meta(mb.specs, inp)).to(dev)
        video = mb.video.to(dev, non_blocking=True).float()
        gen = micro_generator(dev, inp.seed, step, global_micro_index(inp.dp_rank,
                                                                      inp.grad_accum, m))
        # Drawn for the whole micro-batch (the same on every SP rank), then sliced.
        noised = noise_batch(video, meta, gen, mean=inp.t_mean, std=inp.t_std, shift=inp.t_shift)
        losses = noised_shot_losses(model, mb, meta, noised, inp)
        if step == inp.nonfinite_at_step:
            losses = losses * float("nan")
        (losses.sum() * scale).backward()
        micro_sum = losses.detach().sum()
        per_micro[m] = micro_sum
        loss_sum += micro_sum
        shot_buckets = bucket_sums(losses, noised.t_shot, inp.buckets)
        shot_buckets[1] *= inp.owns_batch  # counts once per micro-batch; loss parts add up
        buckets += shot_buckets
        train_flops += flops.train_flops(meta)
    host = [
        local_shots,
        sum(mb.stats.get("tokens", float(mb.num_tokens)) for mb in micro),
        sum(mb.stats.get("scenes", float(len(mb.specs))) for mb in micro),
        sum(mb.stats.get("packing_efficiency", 0.0) for mb in micro),
        float(len(micro)),
        _bad_samples(micro[-1]),  # cumulative loader counters: the last batch has the latest
        micro[-1].stats.get("loader/text_cut", 0.0),  # prompts cut to the model's text window
        float(train_flops),
    ]
    vector = torch.cat([
        loss_sum.double().view(1),
        torch.tensor([x * inp.owns_batch for x in host], dtype=torch.float64).to(
            dev, non_blocking=True),
        buckets.double().flatten(),
    ])
    return vector, per_micro
