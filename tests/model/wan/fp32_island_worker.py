"""torchrun worker of ``test_fp32_islands.py``: the tiny Wan model parallelized over 2 gloo
ranks (AC + FSDP2, ``param_dtype=bfloat16``), scratch-initialised from ``SEED``; one forward
and backward on every scene (each rank the same batch), with the model's fp32 islands and with
none (``keep_in_fp32 = ()``). Rank 0 saves, per mode, the dtypes the parameters have inside
the forward, the output the input of
``proj_out`` and whether every gradient came back finite, to ``argv[1]``."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from lct_train.config.schema import ParallelConfig
from lct_train.model.wan import WanModel
from lct_train.parallel.dist import end_process, shutdown
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import init_sharded, materialize, parallelize
from tests.model.wan.fsdp_worker import BATCH, SEED, scene_batch
from tests.model.wan.wan_testutils import tiny_wan_config

PARALLEL = ParallelConfig(activation_checkpoint="full", param_dtype="bfloat16",
                          reduce_dtype="float32")
# where each parameter is looked at: a module whose forward runs while it is gathered
WATCH = {
    "blocks.0": ("scale_shift_table", "norm2.weight"),
    "blocks.0.attn1": ("to_q.weight",),
    "blocks.0.ffn": ("net.2.weight",),
    "norm_out": (),  # the root's forward: the model's own table and time embedder
    "proj_out": ("weight",),
    "condition_embedder.time_proj": ("weight",),
}
ROOT = ("scale_shift_table", "condition_embedder.time_embedder.linear_1.weight")


def inner(model: torch.nn.Module, name: str) -> torch.nn.Module:
    module = model.get_submodule(name)
    return getattr(module, "_checkpoint_wrapped_module", module)


def run(mesh, islands: bool) -> dict:
    cfg = tiny_wan_config(attn_backend="reference")
    with torch.device("meta"):
        model = WanModel(cfg)
    if not islands:
        model.keep_in_fp32 = ()
    model = materialize(parallelize(model, mesh, PARALLEL), torch.device("cpu"))
    init_sharded(model, SEED)
    seen = {}

    def watch(name, params):
        def hook(module, args):
            for p in params:
                seen[f"{name}.{p}"] = module.get_parameter(p).dtype
            if name == "blocks.0":  # the gathered value, as the forward sees it
                seen["table"] = module.scale_shift_table.detach().clone()
            if name == "norm_out":
                seen.update({p: model.get_parameter(p).dtype for p in ROOT})
        return hook

    for name, params in WATCH.items():
        inner(model, name).register_forward_pre_hook(watch(name, params))
    hidden = record_hidden(model)
    meta, video, text, t, target = scene_batch(cfg, list(range(len(BATCH))))
    out = model(video.bfloat16(), text.bfloat16(), None, t, meta).float()
    ((out - target).square().mean() * dist.get_world_size()).backward()
    grads_ok = all(p.grad is not None and bool(p.grad.full_tensor().isfinite().all())
                   for p in model.parameters())
    table = seen.pop("table")
    return {"dtypes": seen, "table": table, "hidden": hidden[0], "grads_ok": grads_ok}


def record_hidden(model: torch.nn.Module) -> list[torch.Tensor]:
    """The input of ``proj_out`` (every block, the final modulation; scratch ``proj_out`` is
    zero, so the output says nothing), fp32, appended to the returned list at each forward."""
    hidden = []
    model.proj_out.register_forward_pre_hook(
        lambda module, args: hidden.append(args[0].detach().float()))
    return hidden


def main(out: str) -> None:
    dist.init_process_group("gloo")
    mesh = build_mesh("cpu", mesh_shape(dist.get_world_size(), 1, -1, 1))
    results = {mode: run(mesh, mode == "islands") for mode in ("islands", "plain")}
    if dist.get_rank() == 0:
        torch.save(results, out)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
    end_process(0)
