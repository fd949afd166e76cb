"""Peak host memory per rank while loading initial weights (``stage.init_from=<safetensors>``)
on 2 CPU ranks: each rank reads only the rows of its own FSDP shards.

  python bench/init_read_memory.py            # a 'small' model widened to ~0.5 GB fp32
Prints the file size and, per rank, the growth of the peak RSS during ``load_safetensors``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = dict(num_heads=8, head_dim=64, rope_axes_dim=[16, 24, 24], num_dual_blocks=8,
             num_single_blocks=4)


def model_cfg():
    import dataclasses

    from lct_train.model.config import ModelConfig

    root = Path(__file__).resolve().parents[1]
    return dataclasses.replace(ModelConfig.from_yaml(root / "conf" / "model" / "small.yaml"),
                               **WIDTH)


def worker(export: str) -> None:
    import torch.distributed as dist

    from lct_train.parallel.dist import shutdown
    from lct_train.train.init_weights import load_safetensors
    from tests.train.init_worker import sharded_cpu_model

    dist.init_process_group("gloo")
    model = sharded_cpu_model(model_cfg())
    shard = sum(p.to_local().numel() * 4 for p in model.parameters())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load_safetensors(model, Path(export))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rank": dist.get_rank(), "shard_bytes": shard,
                      "peak_rss_growth": after - before}), flush=True)
    shutdown()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        from lct_train.parallel.dist import end_process

        end_process(0)
    from safetensors.torch import save_file

    from lct_train.model.mmdit import LCTModel

    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in LCTModel(model_cfg()).state_dict().items()},
                  export)
        size = export.stat().st_size
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", __file__, "--worker", str(export)]
        root = str(Path(__file__).resolve().parents[1])  # the worker imports tests.train
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode:
            print(proc.stderr[-3000:])
            return 1
        print(f"export: {size / 1e6:.1f} MB")
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                print(f"rank {r['rank']}: own shards {r['shard_bytes'] / 1e6:.1f} MB, "
                      f"peak RSS growth while loading {r['peak_rss_growth'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
