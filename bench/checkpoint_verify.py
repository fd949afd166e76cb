"""Cost of the checkpoint integrity record and check (CRC-32 per DCP file).

    python bench/checkpoint_verify.py                  # a 512 MB file; small-model save/verify
    python bench/checkpoint_verify.py --mb 2048

Prints one JSON line per measurement: CRC-32 throughput of ``checkpoint_integrity.crc32_file``
on a file of ``--mb`` MB (written once, then read from the page cache, as right after a save),
and ``verify`` on a real checkpoint of a model (``--model``, default ``small``) saved with DCP in a one-process
group, next to the time of the DCP load it precedes. At save, each rank hashes only the files
it wrote; on load each rank checks 1/world of the files, so the per-rank cost is
size / world / throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from lct_train.config.store import compose_config
from lct_train.core.checkpoint_layout import META_FILE
from lct_train.model.mmdit import LCTModel
from lct_train.parallel.dist import end_process, shutdown
from lct_train.train import checkpoint_integrity as integrity

CHUNK = 64 << 20


def throughput(work: Path, mb: int, repeats: int) -> dict:
    path = work / "blob.bin"
    with open(path, "wb") as f:
        for _ in range(max(1, mb * (1 << 20) // CHUNK)):
            f.write(os.urandom(CHUNK))
    size = path.stat().st_size
    integrity.crc32_file(path)  # page cache warm, as right after a save
    best = min(_timed(integrity.crc32_file, path) for _ in range(repeats))
    return {"what": "crc32_file", "mb": round(size / 2**20), "seconds": round(best, 3),
            "mb_per_s": round(size / 2**20 / best)}


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def model_checkpoint(work: Path, preset: str, repeats: int) -> dict:
    model = LCTModel(compose_config([f"model={preset}"]).model)
    state = {"model": model.state_dict()}
    ckpt = work / "step-00000001"
    dcp.save(state, checkpoint_id=str(ckpt))
    files = integrity.record_files(ckpt, 0, 1)
    (ckpt / META_FILE).write_text(json.dumps({integrity.FILES_KEY: files}))
    size = sum(f["size"] for f in files.values())
    record = min(_timed(integrity.record_files, ckpt, 0, 1) for _ in range(repeats))
    check = min(_timed(integrity.verify, ckpt) for _ in range(repeats))
    load = min(_timed(lambda: dcp.load(state, checkpoint_id=str(ckpt))) for _ in range(repeats))
    return {"what": f"{preset} model checkpoint", "mb": round(size / 2**20, 2),
            "record_s": round(record, 4), "verify_s": round(check, 4),
            "dcp_load_s": round(load, 4), "verify_over_load": round(check / load, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=512, help="size of the throughput test file")
    p.add_argument("--model", default="small", help="model preset (conf/model) to save")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = p.parse_args()
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(throughput(Path(tmp), args.mb, args.repeats)))
        print(json.dumps(model_checkpoint(Path(tmp), args.model, args.repeats)))
    shutdown()


if __name__ == "__main__":
    main()
    end_process(0)
