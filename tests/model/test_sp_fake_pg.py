"""The memory estimator's hook: the SP mesh and the real ``parallelize`` under torch's fake
process group (no processes), here 16 ranks as (dp_replicate 1, dp_shard 4, sp 4)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

from lct_train.model.mmdit import LCTModel
from lct_train.parallel.mesh import FSDP_DIM, build_mesh, fsdp_mesh, mesh_shape
from lct_train.parallel.parallelize import parallelize
from tests.model.test_fsdp_inputs import BF16
from tests.testutils import tiny_config

WORLD, SP = 16, 4


@pytest.fixture
def fake_world():
    assert not dist.is_initialized()
    dist.init_process_group("fake", store=FakeStore(), rank=5, world_size=WORLD)
    try:
        yield build_mesh("cpu", mesh_shape(WORLD, 1, -1, SP))
    finally:
        dist.destroy_process_group()


def test_parallelize_over_an_sp_mesh_under_a_fake_group(fake_world):
    mesh = fake_world
    assert mesh.mesh_dim_names == ("dp_replicate", "dp_shard", "sp")
    assert tuple(mesh.shape) == (1, WORLD // SP, SP)
    assert mesh["sp"].get_local_rank() == 5 % SP  # sp innermost: adjacent ranks
    assert fsdp_mesh(mesh).mesh_dim_names == (FSDP_DIM,)
    with torch.device("meta"):
        model = parallelize(LCTModel(tiny_config()), mesh, BF16)
    for name, param in model.named_parameters():
        assert param.device_mesh.size() == WORLD, name  # sharded over dp_shard x sp
        rows = param.shape[0]
        assert param.to_local().shape[0] <= -(-rows // WORLD), name
