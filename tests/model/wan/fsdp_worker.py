"""torchrun worker of ``test_wan_fsdp.py``: the Wan model built on meta, parallelized (AC + FSDP2
over the gloo world), scratch-initialised, one forward/backward of ``BATCH`` twice: data
parallel (each rank its scenes) and sequence parallel (every rank all scenes, its chunk of the
video); rank 0 saves both global losses and full gradients to ``argv[1]``."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from lct_train.config.schema import ParallelConfig
from lct_train.model.wan import WanModel, wan_scene
from lct_train.parallel.dist import end_process, shutdown
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import init_sharded, materialize, parallelize
from lct_train.parallel.sp_inputs import local_inputs
from lct_train.parallel.ulysses import SPGroup
from tests.model.wan.wan_testutils import meta_for, random_wan_inputs, tiny_wan_config

SEED = 5
MASK = "causal"
PARALLEL = ParallelConfig(activation_checkpoint="full", param_dtype="float32",
                          reduce_dtype="float32")
BATCH = [  # 17 video tokens: SP chunks of 9 and 8 rows, the cut inside scene 0's second shot
    wan_scene([(2, (1, 2, 3)), (3, (2, 1, 2))], global_text=4),
    wan_scene([(4, (1, 2, 3)), (1, (1, 1, 1))]),
]


def scene_batch(cfg, scenes: list[int]):
    """(meta, video, text, timesteps, target) of ``BATCH[i] for i in scenes``, each scene's
    inputs drawn from its own seed (the same on any rank layout)."""
    meta = meta_for(cfg, [BATCH[i] for i in scenes], mask=MASK)
    parts = []
    for i in scenes:
        one = meta_for(cfg, [BATCH[i]])
        video, text, t = random_wan_inputs(cfg, one, seed=i)
        target = torch.randn(video.shape, generator=torch.Generator().manual_seed(100 + i))
        parts.append((video, text, t, target))
    return (meta, *(torch.cat(p) for p in zip(*parts)))


def global_elements(cfg) -> int:
    return sum(g.video_len for s in BATCH for g in s.groups) * cfg.patch_dim


def loss_of(model, cfg, scenes: list[int], sp=None) -> torch.Tensor:
    """This part's squared error over the global batch's element count; with ``sp`` this
    rank's video rows of the scenes (sequence parallelism)."""
    meta, video, text, t, target = scene_batch(cfg, scenes)
    meta, (video, target), _ = local_inputs(meta, sp, [video, target], text)
    out = model(video, text, None, t, meta)
    return (out - target).square().sum() / global_elements(cfg)


def sharded_model(cfg, shape: tuple[int, int, int]):
    """The Wan model built on meta, parallelized over a ``(1, dp_shard, sp)`` gloo mesh,
    scratch-initialised from ``SEED``; returns (model, mesh)."""
    mesh = build_mesh("cpu", mesh_shape(dist.get_world_size(), *shape))
    with torch.device("meta"):
        model = WanModel(cfg)
    model = materialize(parallelize(model, mesh, PARALLEL), torch.device("cpu"))
    init_sharded(model, SEED)
    return model, mesh


def step(model, loss: torch.Tensor) -> dict:
    """Backward (FSDP averages gradients over the ranks: the loss is scaled by the world), the
    global loss and the full gradients (collectives on every rank)."""
    (loss * dist.get_world_size()).backward()
    dist.all_reduce(loss.detach())
    grads = {n.replace("._checkpoint_wrapped_module", ""): p.grad.full_tensor()
             for n, p in model.named_parameters()}
    return {"loss": loss.detach(), "grads": grads}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = tiny_wan_config(attn_backend="reference")
    # data parallel: each rank its scenes
    model, _ = sharded_model(cfg, (1, -1, 1))
    results = {"fsdp": step(model, loss_of(model, cfg, list(range(rank, len(BATCH), world))))}
    # sequence parallel: every rank all scenes, its chunk of the video rows
    model, mesh = sharded_model(cfg, (1, -1, world))
    sp = SPGroup(mesh["sp"].get_group(), mesh["sp"].get_local_rank(), world)
    results["sp"] = step(model, loss_of(model, cfg, list(range(len(BATCH))), sp))
    if rank == 0:
        torch.save(results, out)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
    end_process(0)
