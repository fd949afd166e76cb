"""Applies activation checkpointing, per-block ``torch.compile`` and FSDP2 to a bare model.

Order (torchtitan): AC wraps each block, compile compiles each (wrapped) block, then
``fully_shard`` shards each block and finally the root. A *block* is every element of every
``nn.ModuleList`` whose attribute name ends in ``blocks`` (``transformer_blocks``,
``single_transformer_blocks``, ``refiner_blocks``): the model declares its sharding units by
that naming. Parameter FQNs stay those of the bare model (DCP's state-dict helpers drop the
checkpoint-wrapper prefix; ``Module.compile`` compiles in place).

Building: the trainer constructs the model under ``torch.device("meta")`` (no memory), calls
``parallelize`` (FSDP shards the meta parameters), then ``materialize``: ``to_empty`` on the
device gives every rank storage for its shards only. Scratch values come from
``init_sharded``: each parameter's full value is drawn on every rank from the same seeded
generator (peak extra memory: one full parameter) and each rank keeps its shard, so the full
weights equal ``lct_train.model.init.init_weights`` on one process for any world size or mesh.
(DTensor's own random ops draw per shard and are CUDA-only, so they are not used.)

Gradient reduction: FSDP averages gradients over the data-parallel ranks (its default divide
factor; a custom factor needs NCCL's PreMulSum, which gloo lacks) over every rank of the FSDP
mesh, sequence-parallel ranks included. The trainer's loss is already the mean over the
*global* batch, so it multiplies each rank's loss by the world size to cancel that average
(``lct_train.train.loss``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from lct_train.core.dtypes import dtype_of
from lct_train.core.fqn import clean_fqn
from lct_train.model.init import init_plan
from lct_train.model.precision import precision_units
from lct_train.parallel.mesh import fsdp_mesh


def apply_ac(model: nn.Module, mode: str) -> None:
    """``full``: recompute every block's forward in backward; ``none``: nothing.

    A block without trainable parameters (frozen under LoRA, e.g. the token refiner's) is not
    wrapped: when nothing before it trains either (the LoRA defaults) it stores no activations
    for backward, and torch 2.13 cannot compile a checkpointed block that runs without autograd
    (its rematerialisation pass refuses the attention's RNG-tagged op in an inference graph).
    A frozen block after a trained one then keeps its activations (custom LoRA targets).
    """
    if mode == "none":
        return
    if mode != "full":
        raise ValueError(f"parallel.activation_checkpoint: unknown mode {mode!r}")
    for blocks in model.block_lists():
        for i, block in enumerate(blocks):
            if any(p.requires_grad for p in block.parameters()):
                blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """Compiles every block in place (regional compile: one graph per block type)."""
    for blocks in model.block_lists():
        for block in blocks:
            block.compile(backend=backend)


def mixed_precision(param_dtype: str, reduce_dtype: str) -> MixedPrecisionPolicy:
    """Blocks cast their (activation) inputs to the compute dtype."""
    return MixedPrecisionPolicy(param_dtype=dtype_of(param_dtype), reduce_dtype=dtype_of(reduce_dtype),
                                cast_forward_inputs=True)


def apply_fsdp(
    model: nn.Module,
    mesh: DeviceMesh,
    mp_policy: MixedPrecisionPolicy,
    reshard_after_forward: bool = True,
) -> None:
    """``fully_shard`` per block, then the root, over ``dp_shard x sp`` (HSDP: and replicated
    over ``dp_replicate``; ``lct_train.parallel.mesh.fsdp_mesh``).

    fp32 islands (``lct_train.model.precision``): under a ``param_dtype`` below fp32, a block or
    root holding parameters the model keeps in fp32 (Wan: ``scale_shift_table``, ``norm2``,
    ``time_embedder``; diffusers' ``_keep_in_fp32_modules``) is split into units of one
    precision each (FSDP2 casts a whole unit to its ``param_dtype`` at all-gather and
    reduce-scatters one gradient dtype per unit): the submodules of the other precision become
    units of their own. A bare ``nn.Parameter`` cannot be a unit (``fully_shard`` takes
    modules), and upcasting a table gathered in bf16 inside the forward would not restore its
    lost bits, so the unit holding it is the fp32 one: a Wan block's own unit (its table, its
    ``norm2``) gathers in fp32 and does not cast its inputs, while ``attn1``, ``attn2`` and
    ``ffn`` are bf16 units (4 all-gathers per block instead of 1); the root holds the model's
    table and ``time_embedder`` in fp32, its Linears (patch embedding, ``time_proj``, text
    embedder, ``proj_out``) are bf16 units. A model without islands (the MMDiT, as diffusers'
    HunyuanVideo) keeps one unit per block."""
    mesh = fsdp_mesh(mesh)
    low_dtype = mp_policy.param_dtype not in (None, torch.float32)
    fp32_policy = MixedPrecisionPolicy(param_dtype=torch.float32,
                                       reduce_dtype=mp_policy.reduce_dtype,
                                       cast_forward_inputs=True)

    def shard(module: nn.Module, policy: MixedPrecisionPolicy, cast_inputs: bool) -> None:
        policy = MixedPrecisionPolicy(param_dtype=policy.param_dtype,
                                      reduce_dtype=policy.reduce_dtype,
                                      cast_forward_inputs=cast_inputs)
        fully_shard(module, mesh=mesh, mp_policy=policy,
                    reshard_after_forward=reshard_after_forward)

    def shard_unit(unit: nn.Module, cast_inputs: bool) -> None:
        root_fp32, low, fp32 = precision_units(model, unit) if low_dtype else (False, [], [])
        for child in low:
            shard(child, mp_policy, True)
        for child in fp32:
            shard(child, fp32_policy, True)
        # an fp32 unit does not cast its inputs (the block computes in the compute dtype)
        shard(unit, fp32_policy if root_fp32 else mp_policy, cast_inputs and not root_fp32)

    for blocks in model.block_lists():
        for block in blocks:
            shard_unit(block, mp_policy.cast_forward_inputs)
    # The root does not cast its inputs: the trainer casts video/text/pooled to the compute
    # dtype itself and keeps the timesteps in fp32 (a bf16 t would be off by up to 0.4 %).
    shard_unit(model, False)


def parallelize(model: nn.Module, mesh: DeviceMesh, parallel_cfg) -> nn.Module:
    """AC -> compile -> FSDP, per ``parallel_cfg`` (``lct_train.config.schema.ParallelConfig``)."""
    apply_ac(model, parallel_cfg.activation_checkpoint)
    if parallel_cfg.compile:
        apply_compile(model, parallel_cfg.compile_backend)
    apply_fsdp(
        model,
        mesh,
        mixed_precision(parallel_cfg.param_dtype, parallel_cfg.reduce_dtype),
        parallel_cfg.reshard_after_forward,
    )
    return model


def materialize(model: nn.Module, device: torch.device) -> nn.Module:
    """Storage on ``device`` for a meta-built (sharded) model; values are uninitialised."""
    model.to_empty(device=device)
    for name, buffer in model.named_buffers():
        if buffer.is_meta:  # no model buffer exists today; refuse to guess one's value
            raise RuntimeError(f"materialize: buffer {name} is still on the meta device")
    return model


@torch.no_grad()
def init_sharded(model: nn.Module, seed: int, select=None) -> None:
    """Scratch initialisation of a (sharded) model, independent of the world size (module
    docstring). Call on every rank with the same ``seed``; the global RNG is not touched.
    ``select(fqn)``: only the parameters it accepts (base weights, or LoRA adapters)."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param, fn in init_plan(model):
        if select is not None and not select(clean_fqn(name)):
            continue
        local = param.to_local() if isinstance(param, DTensor) else param
        if local.device not in generators:
            generators[local.device] = torch.Generator(local.device).manual_seed(seed)
        full = torch.empty(param.shape, dtype=param.dtype, device=local.device)
        fn(full, generators[local.device])
        if isinstance(param, DTensor):  # every rank holds ``full``: slice, no communication
            full = distribute_tensor(full, param.device_mesh, param.placements,
                                     src_data_rank=None).to_local()
        local.copy_(full)
