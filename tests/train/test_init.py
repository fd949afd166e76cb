"""Scratch init of the meta-built, sharded model: the same full weights as ``init_weights`` on
one process, whatever the world size (2 ranks, and 3 for uneven shards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lct_train.model.init import init_weights
from lct_train.model.mmdit import LCTModel
from tests.testutils import tiny_config
from tests.train.init_worker import SEED
from tests.train.torchrun import LAUNCH_TIMEOUT_S, env

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("init_worker.py")


@pytest.mark.parametrize("nproc", [2, 3])
def test_sharded_scratch_init_equals_one_process_init(nproc, tmp_path):
    out = tmp_path / "full.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(out)
    model = LCTModel(tiny_config())
    init_weights(model, torch.Generator().manual_seed(SEED))
    want = model.state_dict()
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    assert any(torch.count_nonzero(v) for v in want.values())
