"""torchrun worker of ``test_sp_train.py``: the training step under sequence parallelism
(``forward_backward`` on an FSDP model over a ``(1, world / sp, sp)`` mesh) against the bare
model on one process over the same global batch: step loss and every parameter gradient, for
both masks (``stage=lct`` and ``stage=causal_ft``), fp32, activation checkpointing on.

The global batch (per micro-batch, several packed scenes): global groups, 1-frame image shots,
an odd joint token count, a text-only chunk edge. Every rank computes the reference itself (the
bare model, no collectives); rank 0 writes the largest differences to ``argv[1]`` (JSON).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import distribute_tensor

from lct_train.config.schema import ParallelConfig
from lct_train.data.packing import PackedScenes
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.dist import end_process, shutdown
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import materialize, parallelize
from lct_train.parallel.ulysses import SPGroup
from lct_train.train.batches import global_micro_index, random_scenes
from lct_train.train.flops import FlopCounter
from lct_train.train.loss import micro_generator, noise_batch, shot_losses
from lct_train.train.step import StepInputs, forward_backward
from tests.testutils import tiny_config

SEED, STEP, GRAD_ACCUM = 5, 3, 2
ABS_FLOOR = 1e-4  # gradients here are O(0.1..10)
PARALLEL = ParallelConfig(activation_checkpoint="full", param_dtype="float32",
                          reduce_dtype="float32")
G = GroupSpec
# Per global micro-batch: packed scenes (text_len, (F, H, W) patches, is_global).
SCENES = [
    [SceneSpec((G(3, (1, 2, 2), True), G(5, (2, 2, 3)), G(2, (1, 3, 2)))),  # 1-frame shot
     SceneSpec((G(4, (1, 2, 3)), G(7, (2, 1, 2))))],
    [SceneSpec((G(6, (1, 2, 2), True), G(1, (1, 1, 1)), G(3, (2, 3, 1)))),
     SceneSpec((G(9, (1, 2, 2)),)), SceneSpec((G(2, (2, 2, 2)), G(5, (1, 2, 1))))],
    [SceneSpec((G(2, (1, 2, 2), True), G(3, (2, 2, 2)))), SceneSpec((G(4, (1, 3, 3)),))],
    [SceneSpec((G(8, (2, 2, 1)), G(3, (1, 1, 2)))), SceneSpec((G(1, (1, 2, 2), True),
                                                                G(2, (2, 2, 2))))],
]


def packed(specs: list[SceneSpec], index: int, cfg) -> PackedScenes:
    keys = [f"scene/{index}/{i}" for i in range(len(specs))]
    return random_scenes(specs, keys, cfg, torch.Generator().manual_seed(100 + index))


def bare_name(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "")


def random_weights(model: LCTModel) -> dict[str, torch.Tensor]:
    """Non-zero everywhere (the real init zeroes the adaLN gates: most gradients would be 0)."""
    gen = torch.Generator().manual_seed(SEED)
    return {bare_name(n): 0.2 * torch.randn(p.shape, generator=gen)
            for n, p in model.named_parameters()}


def reference(cfg, weights, micro: list[PackedScenes], mask: str):
    """The global-mean loss and gradients on one process, written out from SPEC §5."""
    model = LCTModel(cfg)
    model.load_state_dict(weights, strict=True)
    total, shots = torch.zeros(()), sum(s.num_shots for mb in micro for s in mb.specs)
    for m, mb in enumerate(micro):
        meta = build_packed_meta(mb.specs, mask=mask, text_rope=cfg.text_rope)
        noised = noise_batch(mb.video, meta, micro_generator(torch.device("cpu"), SEED, STEP, m),
                             mean=0.0, std=1.0)
        pred = model(noised.z_t, mb.text, mb.pooled, noised.t_group, meta)
        total = total + shot_losses(pred, noised.target, meta).sum()
    (total / shots).backward()
    return float(total / shots), {n: p.grad for n, p in model.named_parameters()}


def main(out: str, sp_size: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = build_mesh("cpu", mesh_shape(world, 1, -1, sp_size))
    sp = SPGroup(mesh["sp"].get_group(), mesh["sp"].get_local_rank(), sp_size)
    cfg = tiny_config()
    with torch.device("meta"):
        model = LCTModel(cfg)
    flops = FlopCounter(model, cfg)
    model = materialize(parallelize(model, mesh, PARALLEL), torch.device("cpu"))
    weights = random_weights(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.to_local().copy_(distribute_tensor(weights[bare_name(name)], param.device_mesh,
                                                     param.placements, src_data_rank=None)
                                   .to_local())
    dp_rank, dp_size = rank // sp_size, world // sp_size
    micro_all = [packed(s, i, cfg) for i, s in enumerate(SCENES[: dp_size * GRAD_ACCUM])]
    mine = [micro_all[global_micro_index(dp_rank, GRAD_ACCUM, m)] for m in range(GRAD_ACCUM)]
    result = {"tokens": [mb.num_tokens for mb in micro_all]}
    for mask in ("bidirectional", "causal"):
        inp = StepInputs(device=torch.device("cpu"), compute_dtype=torch.float32, mask=mask,
                         model_cfg=cfg, seed=SEED, dp_rank=dp_rank, dp_size=dp_size,
                         grad_accum=GRAD_ACCUM, t_mean=0.0, t_std=1.0, t_shift=1.0,
                         guidance=None, buckets=4, sp=sp)
        vector, _ = forward_backward(model, mine, STEP, inp, flops)
        dist.all_reduce(vector)
        loss = float(vector[0] / vector[1])
        want_loss, want_grads = reference(cfg, weights, micro_all, mask)
        grads = {bare_name(n): p.grad.full_tensor() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        # |sp - reference| against the reference's scale, per parameter, plus an absolute
        # floor: some gradients are 0 up to rounding (key biases: softmax is shift-invariant).
        worst = max(((g - want_grads[n]).abs().max().item()
                     / (want_grads[n].abs().max().item() + ABS_FLOOR), n) for n, g in grads.items())
        result[mask] = {"loss": loss, "want_loss": want_loss, "shots": float(vector[1]),
                        "worst_grad_diff": worst[0], "worst_param": worst[1],
                        "grad_norm": float(torch.cat([g.flatten() for g in grads.values()]).norm()),
                        "zero_grads": [n for n, g in want_grads.items() if not g.abs().max()]}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    end_process(0)
