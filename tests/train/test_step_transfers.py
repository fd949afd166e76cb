"""The step's host -> device traffic: metadata and kernel plans in one copy each, no host sync.

CPU: the copies are counted on the ``meta`` device (a device other than the host). GPU: one
training step runs under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lct_train.model.attention.varlen import ghost_plan
from lct_train.model.layout import GroupSpec, SceneSpec, build_packed_meta
from lct_train.model.transfer import to_device

SPECS = [SceneSpec((GroupSpec(3, (1, 2, 2), is_global=True), GroupSpec(5, (2, 2, 3)),
                    GroupSpec(4, (1, 3, 2)))),
         SceneSpec((GroupSpec(2, (1, 2, 2)),))]


class CrossDeviceCopies(TorchDispatchMode):
    """Counts ops whose output lies on another device than their tensor inputs."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = {a.device for a in args if isinstance(a, torch.Tensor)}
        if isinstance(out, torch.Tensor) and ins and out.device not in ins:
            self.count += 1
        return out


def test_to_device_keeps_values_dtypes_and_shapes():
    tensors = [torch.arange(7), torch.tensor([True, False, True]),
               torch.arange(12, dtype=torch.int32).reshape(3, 4), torch.zeros(0)]
    moved = to_device(tensors, "cpu")
    assert all(a is b for a, b in zip(moved, tensors))  # already there: no copy
    meta = to_device(tensors, "meta")
    for a, b in zip(meta, tensors):
        assert (a.device.type, a.dtype, a.shape) == ("meta", b.dtype, b.shape)


@pytest.mark.parametrize("mask", ["bidirectional", "causal"])
def test_packed_meta_and_plan_move_in_one_copy_each(mask):
    meta = build_packed_meta(SPECS, mask=mask, text_rope=True)
    assert meta.to("cpu") is meta
    with CrossDeviceCopies() as copies:
        moved = meta.to("meta")
    assert copies.count == 1
    for f in dataclasses.fields(meta):
        value = getattr(moved, f.name)
        if isinstance(value, torch.Tensor):
            assert value.device.type == "meta", f.name
            assert value.dtype == getattr(meta, f.name).dtype
    assert moved.attn.lo.device.type == "meta"
    with CrossDeviceCopies() as copies:
        plan = ghost_plan(moved.attn)
    assert copies.count == 1
    assert all(c.cu_seqlens_q.device.type == "meta" for c in plan.calls)


@pytest.mark.gpu
def test_one_training_step_never_waits_for_the_device(tmp_path):
    """forward + backward + clip + AdamW under sync debug "error"; the metric read after it
    is the step's one host sync."""
    from lct_train.config.store import compose_config
    from lct_train.parallel.dist import init_distributed, shutdown
    from lct_train.train.metrics import reduce_step_metrics
    from lct_train.train.optim import clip_grad_norm
    from lct_train.train.step import forward_backward
    from lct_train.train.trainer import Trainer

    os.environ.pop("RANK", None)
    cfg = compose_config(["model=tiny", "data_source=synthetic", "parallel.device=cuda",
                          f"run_dir={tmp_path}", "logging.tensorboard=false",
                          "checkpoint.enabled=false", "optim.grad_accum=2"])
    world = init_distributed(cfg.parallel)
    try:
        trainer = Trainer(cfg, world)
        for step in (1, 2):  # step 1: lazy FSDP init, allocator warm-up
            micro = trainer.batches.next_step(step)
            if step == 2:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                vector, _ = forward_backward(trainer.model, micro, step, trainer.step_inputs,
                                             trainer.flops)
                norm = clip_grad_norm(trainer.model, cfg.optim.grad_clip)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            m = reduce_step_metrics(vector, norm, cfg.logging.timestep_buckets)
            assert torch.isfinite(torch.tensor(m["loss"]))
    finally:
        shutdown()
