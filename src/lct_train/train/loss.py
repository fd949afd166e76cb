"""The LCT training objective (SPEC §5): per-shot timesteps, noising, per-shot loss.

Randomness: every micro-batch draws its timesteps and noise from its own generator, seeded
from ``(seed, step, global micro-batch index)`` where the global index is
``dp_rank * grad_accum + micro``. Ranks therefore differ, a resumed run draws the same numbers,
and the draws do not depend on how a global batch is split over ranks and micro-batches
(1 rank x 2 micro-batches == 2 ranks x 1 micro-batch, SPEC §8.7).

Normalisation: the step loss is the mean of the per-shot losses over every shot of the global
batch (all micro-batches of all ranks). Each micro-batch contributes
``sum(its shot losses) / global_shot_count * world_size`` where the global count is all-reduced
on the device before the first forward (no host sync). FSDP *averages* gradients over all
``world_size = dp_size x sp_degree`` ranks, which the ``* world_size`` cancels: the gradient is
exactly that of the global mean whatever the packing. (The logged loss is the plain global mean.)

Sequence parallelism (``lct_train.parallel.ulysses``): the timesteps and the noise of a
micro-batch are drawn for the *whole* micro-batch from the generator above (the same numbers on
every rank of the SP group, and the same as with ``sp_degree=1``), then each rank takes its
slice of ``z_t`` and the target. A rank's ``shot_losses`` are its tokens' part of each shot's
mean (divided by the whole shot's element count): summed over the SP group they are the shot
losses, so the parts join the step's one metric all-reduce and the gradients add up in FSDP's
reduction over ``dp_shard x sp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lct_train.core import flow
from lct_train.data.seeding import stable_seed
from lct_train.model.layout import PackedMeta

NOISE_STREAM = "lct-train/noise"


def micro_generator(device: torch.device, seed: int, step: int, global_micro: int) -> torch.Generator:
    """The generator of one micro-batch's timesteps and noise."""
    gen = torch.Generator(device=device)
    gen.manual_seed(stable_seed(NOISE_STREAM, seed, step, global_micro))
    return gen


@dataclass
class NoisedBatch:
    """Model inputs and targets of one micro-batch."""

    z_t: torch.Tensor  # [Nv, patch_dim] noisy video tokens
    target: torch.Tensor  # [Nv, patch_dim] velocity eps - z_0
    t_group: torch.Tensor  # [G] timestep per group (global groups: 0)
    t_shot: torch.Tensor  # [num_shots]


def noise_batch(
    video: torch.Tensor,
    meta: PackedMeta,
    generator: torch.Generator,
    *,
    mean: float,
    std: float,
    shift: float = 1.0,
) -> NoisedBatch:
    """Draws one ``t`` per shot (logit-normal), sets global groups to 0, noises the latents.

    ``video [Nv, patch_dim]`` are the fp32 clean latents (the noise is drawn in fp32).
    """
    device = video.device
    t_shot = flow.logit_normal((meta.num_shots,), mean, std, generator=generator, device=device)
    if shift != 1.0:
        t_shot = flow.shift_timesteps(t_shot, shift)
    eps = torch.randn(video.shape, generator=generator, device=device, dtype=torch.float32)
    return noise_at(video, meta, t_shot, eps)


def noise_at(video: torch.Tensor, meta: PackedMeta, t_shot: torch.Tensor,
             eps: torch.Tensor) -> NoisedBatch:
    """Noises the latents with the given per-shot timesteps and noise (global groups: 0)."""
    device = video.device
    t_group = torch.zeros(meta.num_groups, device=device, dtype=t_shot.dtype)
    t_group[meta.shot_group] = t_shot
    t_tok = t_group[meta.video_group]
    return NoisedBatch(
        z_t=flow.noise_latents(video, eps, t_tok),
        target=flow.velocity_target(video, eps),
        t_group=t_group,
        t_shot=t_shot,
    )


def shot_losses(pred: torch.Tensor, target: torch.Tensor, meta: PackedMeta) -> torch.Tensor:
    """``[num_shots]`` mean squared error over each shot's video elements (fp32).

    Dummy tokens (``video_shot == -1``) are excluded; text never enters (``pred`` is video).
    """
    row_se = (pred.float() - target.float()).square().sum(dim=-1)
    in_shot = meta.video_shot >= 0
    sums = torch.zeros(meta.num_shots, device=pred.device, dtype=torch.float32)
    sums.index_add_(0, meta.video_shot.clamp(min=0), row_se * in_shot)
    elements = (meta.shot_video_cu[1:] - meta.shot_video_cu[:-1]) * pred.shape[-1]
    return sums / elements.to(torch.float32)


def bucket_sums(values: torch.Tensor, t: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``[2, B]``: per equal-width bucket of ``t`` in [0, 1], the sum of ``values`` and the count."""
    idx = (t.detach() * num_buckets).long().clamp_(0, num_buckets - 1)
    out = torch.zeros(2, num_buckets, device=values.device, dtype=torch.float32)
    out[0].index_add_(0, idx, values.detach().float())
    out[1].index_add_(0, idx, torch.ones_like(values, dtype=torch.float32))
    return out
