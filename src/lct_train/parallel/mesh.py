"""The device mesh: ``(dp_replicate, dp_shard, sp)``, sequence parallelism innermost.

* ``sp``: the ranks of one sequence-parallel group work on the same packed micro-batch
  (``lct_train.parallel.ulysses``); they are adjacent global ranks (inside a node first).
* FSDP2 shards parameters over the flattened ``dp_shard x sp`` ranks (``dp_shard_sp``, as
  torchtitan does with context parallelism) and replicates over ``dp_replicate`` (HSDP).
* Data parallelism: a rank's data-parallel rank is ``rank // sp`` and the data-parallel size
  ``world / sp``; every rank of an SP group reads the same scenes.

`mesh_shape` is the validation (errors name the config key); `build_mesh` works on any process
group, including torch's fake one (the memory estimator builds ``(1, N / sp, sp)`` meshes).
"""

from __future__ import annotations

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from lct_train.core.errors import ConfigError

MESH_DIMS = ("dp_replicate", "dp_shard", "sp")
FSDP_DIM = "dp_shard_sp"  # the flattened dp_shard x sp dim FSDP shards over


def mesh_shape(world_size: int, dp_replicate: int, dp_shard: int, sp: int) -> tuple[int, int, int]:
    """``(dp_replicate, dp_shard, sp)`` for ``world_size`` ranks; ``dp_shard = -1`` fills in."""
    if world_size % sp:
        raise ConfigError("parallel.sp_degree",
                          f"{sp} does not divide the world size {world_size}")
    if dp_shard == -1:
        if (world_size // sp) % dp_replicate:
            raise ConfigError("parallel.dp_replicate",
                              f"{dp_replicate} does not divide the world size {world_size} / "
                              f"parallel.sp_degree {sp}")
        dp_shard = world_size // sp // dp_replicate
    if dp_replicate * dp_shard * sp != world_size:
        raise ConfigError("parallel.dp_shard", f"dp_replicate ({dp_replicate}) x dp_shard "
                          f"({dp_shard}) x sp_degree ({sp}) must equal the world size "
                          f"({world_size})")
    return dp_replicate, dp_shard, sp


def build_mesh(device_type: str, shape: tuple[int, int, int]) -> DeviceMesh:
    """The 3-D mesh plus its flattened FSDP dim (collective: call on every rank)."""
    mesh = init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)
    mesh["dp_shard", "sp"]._flatten(FSDP_DIM)
    return mesh


def fsdp_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """What ``fully_shard`` gets: ``dp_shard_sp``, or ``(dp_replicate, dp_shard_sp)`` (HSDP).
    A mesh without an ``sp`` dim is a data-parallel mesh the caller built: used as it is."""
    if "sp" not in (mesh.mesh_dim_names or ()):
        return mesh
    flat = mesh["dp_shard", "sp"]._flatten(FSDP_DIM)  # idempotent: the mesh build_mesh made
    if mesh["dp_replicate"].size() > 1:
        return mesh["dp_replicate", FSDP_DIM]
    return flat


def mesh_groups(mesh: DeviceMesh) -> list:
    """Every process group of the mesh (its dims and the flattened FSDP dim)."""
    return [*(mesh[name].get_group() for name in MESH_DIMS), fsdp_mesh(mesh).get_group(-1)]
