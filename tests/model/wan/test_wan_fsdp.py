"""`parallelize` takes the Wan model as it takes the MMDiT (its declared block list): on 2 gloo
ranks, FSDP2 + activation checkpointing + sharded scratch init give the loss and gradients of
one process running the whole batch, data parallel and Ulysses sequence parallel (uneven video
chunks, a chunk boundary inside a shot, cross-attention on replicated prompt windows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lct_train.model.init import init_weights
from lct_train.model.wan import WanModel
from tests.model.wan.fsdp_worker import BATCH, SEED, loss_of
from tests.model.wan.wan_testutils import tiny_wan_config
from tests.train.torchrun import LAUNCH_TIMEOUT_S, env

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("fsdp_worker.py")


def test_two_rank_fsdp_and_sp_equal_one_process(tmp_path):
    out = tmp_path / "result.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(out)

    cfg = tiny_wan_config(attn_backend="reference")
    model = WanModel(cfg)
    init_weights(model, torch.Generator().manual_seed(SEED))
    loss = loss_of(model, cfg, list(range(len(BATCH))))
    loss.backward()
    want = {n: p.grad for n, p in model.named_parameters()}
    assert any(float(g.abs().max()) > 0 for g in want.values())
    for mode in ("fsdp", "sp"):
        torch.testing.assert_close(got[mode]["loss"], loss.detach(), rtol=1e-5, atol=1e-7)
        assert got[mode]["grads"].keys() == want.keys()
        for name, grad in want.items():
            torch.testing.assert_close(got[mode]["grads"][name], grad, rtol=1e-4, atol=1e-6,
                                       msg=f"{mode}: {name}")
