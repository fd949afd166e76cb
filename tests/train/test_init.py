"""Scratch init of the meta-built, sharded model: the same full weights as ``init_weights`` on
one process, whatever the world size (2 ranks, and 3 for uneven shards)."""

from __future__ import annotations

import json
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


READ_WORKER = Path(__file__).with_name("init_read_worker.py")


def _read_job(nproc: int, export: Path, out: Path, failing_rank: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(READ_WORKER), str(export), str(out),
           str(failing_rank)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env())
    assert proc.returncode == 0, proc.stderr[-4000:]


def _export(tmp_path: Path) -> tuple[Path, dict]:
    from safetensors.torch import save_file

    model = LCTModel(tiny_config())
    init_weights(model, torch.Generator().manual_seed(SEED + 1))
    for p in model.parameters():  # adaLN-zero leaves zeros: make every row distinct
        p.data.normal_(generator=torch.Generator().manual_seed(p.numel()))
    want = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(want, tmp_path / "model.safetensors")
    return tmp_path / "model.safetensors", want


def test_sharded_safetensors_read_gives_the_full_weights(tmp_path):
    """3 ranks (uneven shards) each read their own rows; the gathered model is the file."""
    export, want = _export(tmp_path)
    out = tmp_path / "full.pt"
    _read_job(3, export, out, failing_rank=-1)
    got = torch.load(out)
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    reads = [json.loads(Path(f"{out}.rows{r}").read_text()) for r in range(3)]
    for name, value in want.items():
        if value.dim() == 0:
            continue
        per_rank = [r.get(name, 0) for r in reads]
        assert sum(per_rank) == value.shape[0], (name, per_rank)  # every row read exactly once
        if value.shape[0] >= 3:  # sharded over all 3 ranks: no rank reads the whole tensor
            assert max(per_rank) < value.shape[0], (name, per_rank)


def test_a_read_failure_on_one_rank_fails_every_rank_with_one_message(tmp_path):
    export, _ = _export(tmp_path)
    out = tmp_path / "full.pt"
    _read_job(2, export, out, failing_rank=1)  # returns: nobody hangs at a collective
    messages = [Path(f"{out}.rank{r}").read_text() for r in range(2)]
    assert messages[0] == messages[1]
    assert "injected read failure" in messages[0]
    assert "(rank 1)" in messages[0]
    assert "stage.init_from" in messages[0]
    assert not out.exists()
