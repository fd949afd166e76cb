"""One estimate: the trainer's model, ``parallelize`` and step, on fake tensors in a fake
process group, under ``FSDPMemTracker``.

What is real: the model (the config's family's, ``model.family.build_model``; under ``finetune=lora`` with its adapters
and its frozen base held in the compute dtype, as the trainer builds it), the mesh (``parallel.mesh.build_mesh``, SP included),
``parallelize`` (AC, FSDP2, mixed precision), AdamW (``train.optim``), the step
(``train.step.forward_backward``: noising, forward, per-shot loss, backward, gradient sync under
accumulation), clipping. What is not: the values (fake tensors carry shapes only), the
collectives (the fake backend returns at once), and the kernels (each op's fake implementation
allocates its outputs; attention is torch's flash ``varlen_attn`` whose fake kernel saves
flash's O(L) output and log-sum-exp, as on a GPU; the dense reference backend would save
L x L scores and is only used to compare with a real CPU run). Tensors live on fake *CPU*
devices: some CUDA fake kernels abort on a CPU-only build of torch.

Not tracked: the CUDA context and NCCL buffers (about 1-2 GB on a GPU, hence the headroom),
the caching allocator's fragmentation (also the headroom), and ``torch.compile`` workspace.
The batch metadata (host-built index tensors, moved in one copy) is added by size.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed._tools.mem_tracker import _TOTAL_KEY

from lct_train.config.schema import TrainConfig
from lct_train.data.packing import PackedScenes
from lct_train.estimate.config import EstimateConfig
from lct_train.estimate.scene import scene_spec
from lct_train.model.attention import get_backend
from lct_train.model.family import build_model
from lct_train.model.layout import SceneSpec
from lct_train.parallel.dist import World
from lct_train.parallel.mesh import build_mesh, mesh_shape
from lct_train.parallel.parallelize import init_sharded, materialize, parallelize
from lct_train.train.flops import FlopCounter
from lct_train.train.lora_run import add_adapters
from lct_train.train.optim import build_optimizer, clip_grad_norm
from lct_train.train.step import StepInputs, forward_backward, host_meta

DEVICE = torch.device("cpu")


@dataclass
class Measured:
    """Peak of one rank: bytes per tracker category, plus the batch metadata."""

    categories: dict[str, int]
    metadata_bytes: int
    spec: SceneSpec
    params: int  # parameters of the whole model
    trainable: int  # of which trained (all; under finetune=lora the adapters)

    @property
    def peak_bytes(self) -> int:
        return self.categories["Total"] + self.metadata_bytes


def fake_process_group(world_size: int) -> None:
    """PyTorch's fake backend: collectives return immediately, every rank is rank 0's twin."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        dist.destroy_process_group()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)


def _world(cfg: TrainConfig) -> World:
    """Rank 0 of the (fake) job, on the trainer's ``(dp_replicate, dp_shard, sp)`` mesh."""
    p = cfg.parallel
    shape = mesh_shape(dist.get_world_size(), p.dp_replicate, p.dp_shard, p.sp_degree)
    return World(dist.get_rank(), dist.get_world_size(), 0, DEVICE,
                 build_mesh(DEVICE.type, shape))


def _micro_batch(spec: SceneSpec, model_cfg, step: int, m: int) -> PackedScenes:
    num_video = sum(g.video_len for g in spec.groups)
    num_text = sum(g.text_len for g in spec.groups)
    return PackedScenes(
        keys=[f"estimate/{step}/{m}"], sources=["estimate"], specs=[spec],
        video=torch.randn(num_video, model_cfg.patch_dim),
        text=torch.randn(num_text, model_cfg.text_dim),
        pooled=torch.randn(len(spec.groups), model_cfg.pooled_dim),
        shot_is_image=torch.zeros(spec.num_shots, dtype=torch.bool),
        stats={"scenes": 1.0, "tokens": float(spec.num_tokens), "packing_efficiency": 1.0})


def _attentions(meta, model_cfg) -> list:
    """The batch's attention intervals the model runs (``attention_layers`` of its config)."""
    return [getattr(meta, name) for name, layers in model_cfg.attention_layers.items() if layers]


def _host_metas(spec: SceneSpec, inp: StepInputs, backend) -> list:
    """Built on the host with real tensors, kernel plans included (they read host ints)."""
    metas = []
    for _ in range(inp.grad_accum):
        meta = host_meta([spec], inp)
        for attn in _attentions(meta, inp.model_cfg):
            attn.plan_for(backend)
        metas.append(meta)
    return metas


def _metadata_bytes(meta, model_cfg) -> int:
    tensors = [getattr(meta, f.name) for f in dataclasses.fields(meta)]
    tensors += [t for attn in _attentions(meta, model_cfg) for t in attn.tensors()]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class PeakTracker(FSDPMemTracker):
    """``FSDPMemTracker`` keeping only the per-device peak, which is all an estimate reports.

    The stock tracker, after *every* op, also walks every module it has seen to update the
    peak of those still running (``_update_peak_stats``); with hundreds of modules (60 blocks,
    each wrapped for activation checkpointing, whose ``__getattr__`` fails over on every weakref
    lookup) that walk was ~40 % of an estimate's time (py-spy, hunyuan-video). The categories
    and the peak are computed exactly as before (``_curr_mem_snap`` is updated by the stock
    code); only the per-module peaks, which nothing here reads, are no longer kept.
    """

    def _update_peak_stats(self, peak_state) -> None:
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap[_TOTAL_KEY]:
                self._peak_mem[dev] = snap[_TOTAL_KEY]
                self._peak_mem_snap[dev] = dict(snap)


@contextlib.contextmanager
def _per_forward_module_stats(model, tracker):
    """The tracker refuses a second forward of the root per step (gradient accumulation)
    unless its per-module stats are cleared; its peak (what is reported) is kept."""

    def clear(module, args):
        if module is model:
            tracker.reset_mod_stats()

    handle = torch.nn.modules.module.register_module_forward_pre_hook(clear)
    try:
        yield
    finally:
        handle.remove()


def _train_step(model, optimizer, micro, step, inp, flops, metas, grad_clip) -> None:
    forward_backward(model, micro, step, inp, flops, metas=metas)
    clip_grad_norm(model, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(cfg: TrainConfig, est: EstimateConfig, fake: bool = True,
            tracker_cls: type[FSDPMemTracker] = PeakTracker) -> Measured:
    """Peak memory of rank 0 over ``est.steps`` training steps with optimizer state (the
    process group must exist: ``fake_process_group`` for an estimate, a real gloo group for the
    check against reality)."""
    model_cfg = dataclasses.replace(cfg.model, attn_backend=est.attention)
    spec = scene_spec(est, model_cfg)
    world = _world(cfg)
    inp = StepInputs.from_config(cfg, model_cfg, world, DEVICE)
    backend = get_backend(est.attention, torch.device("cuda"), cfg.stage.mask == "causal")
    model = build_model(model_cfg, "meta")
    if cfg.finetune.mode == "lora":  # frozen base in its dtype (no grads, no AdamW state)
        add_adapters(model, cfg)
    flops = FlopCounter(model, model_cfg)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metas = _host_metas(spec, inp, backend)
    small_spec = scene_spec(dataclasses.replace(est, tokens=0, grid=[1, 1, 1], shots=1), model_cfg)
    warm = _host_metas(small_spec, inp, backend)
    mesh = world.mesh
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode:
        model = materialize(parallelize(model, mesh, cfg.parallel), DEVICE)
        if not fake:
            init_sharded(model, cfg.seed)
        # What a GPU run builds (fused AdamW on CUDA under implementation=auto).
        optimizer = build_optimizer(model, cfg.optim, torch.device("cuda"))
        # Untracked warm-up on a one-frame scene: creates AdamW's state, as a first step does.
        # Observed on torch 2.13: the first optimizer steps over DTensors run DTensor's
        # sharding propagation, which the tracker counts at the *global* size under OptState
        # (~16x the local state); it is cached by shape, so the tracked steps below are
        # counted as allocated.
        warm_micro = [_micro_batch(small_spec, model_cfg, 0, m) for m in range(inp.grad_accum)]
        _train_step(model, optimizer, warm_micro, 0, inp, flops, warm, cfg.optim.grad_clip)
        tracker = tracker_cls(model, optimizer)
        with tracker, _per_forward_module_stats(model, tracker):
            for step in range(1, est.steps + 1):
                micro = [_micro_batch(spec, model_cfg, step, m) for m in range(inp.grad_accum)]
                _train_step(model, optimizer, micro, step, inp, flops, metas,
                            cfg.optim.grad_clip)
        peak = tracker.get_tracker_snapshot("peak")
    categories = {getattr(k, "value", k): int(v) for k, v in next(iter(peak.values())).items()}
    return Measured(categories, _metadata_bytes(metas[0], model_cfg) * len(metas), spec, params,
                    trainable)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
