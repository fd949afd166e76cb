"""Process groups and the data-parallel device mesh.

``init_distributed`` starts the default process group from torchrun's environment (or a
one-process group when launched without torchrun), with the long start-up timeout;
``set_train_timeout`` shortens it once the first step went through (torchtitan practice: a
hang is then reported in minutes, not the start-up allowance). ``build_mesh`` lays out the
ranks as ``(dp_replicate, dp_shard, sp)`` (``lct_train.parallel.mesh``): FSDP over
``dp_shard x sp``, replication (HSDP) when ``dp_replicate > 1``, sequence parallelism over ``sp``.
A process that ran collectives ends with ``shutdown`` then ``end_process``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from lct_train.core.errors import ConfigError
from lct_train.parallel.mesh import build_mesh, mesh_groups, mesh_shape
from lct_train.parallel.ulysses import SPGroup

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class World:
    """Where this process sits: global rank/size, local rank, device, data-parallel mesh."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sp_size(self) -> int:
        return self.mesh["sp"].size()

    @property
    def dp_rank(self) -> int:
        """Data-parallel rank: the ranks of one sequence-parallel group share it (and the data)."""
        return self.rank // self.sp_size

    @property
    def dp_size(self) -> int:
        return self.size // self.sp_size

    @property
    def sp(self) -> SPGroup | None:
        """This rank's sequence-parallel group; None without sequence parallelism."""
        if self.sp_size == 1:
            return None
        return SPGroup(self.mesh["sp"].get_group(), self.mesh["sp"].get_local_rank(),
                       self.sp_size)


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("parallel.device", "cuda requested but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pick_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name == "nccl" and device.type != "cuda":
        raise ConfigError("parallel.backend", "nccl needs parallel.device=cuda")
    return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _ensure_env() -> None:
    """Lets ``python -m lct_train.train.main`` run as a one-process job without torchrun."""
    if "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    os.environ.setdefault("MASTER_ADDR", LOCALHOST)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def init_distributed(parallel_cfg) -> World:
    """Starts the default process group and the data-parallel mesh (all ranks)."""
    _ensure_env()
    local_rank = int(os.environ["LOCAL_RANK"])
    device = pick_device(parallel_cfg.device, local_rank)
    backend = pick_backend(parallel_cfg.backend, device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=timedelta(seconds=parallel_cfg.init_timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    shape = mesh_shape(dist.get_world_size(), parallel_cfg.dp_replicate, parallel_cfg.dp_shard,
                       parallel_cfg.sp_degree)
    mesh = build_mesh(device.type, shape)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device, mesh)


def set_train_timeout(world: World, seconds: int) -> None:
    """Shortens the collective timeout of every group (call on all ranks after step 1)."""
    dist.barrier()
    if world.device.type == "cuda":
        torch.cuda.synchronize()
    timeout = timedelta(seconds=seconds)
    for group in [None, *mesh_groups(world.mesh)]:
        dist.distributed_c10d._set_pg_timeout(timeout, group)


def shutdown(synchronize: bool = True) -> None:
    """Ends this process's collectives in order; call it on every rank, on success and on
    every error path, before the interpreter exits.

    ``synchronize`` (the success path): a barrier first, so no rank tears its connections down
    while a peer is still working (rank 0 writing the outputs). On an error path the peers may
    be gone or inside another collective, so there is no barrier. Then every group is
    destroyed and the garbage collected while the interpreter is fully alive: a group kept
    alive by a reference cycle would otherwise be destroyed during interpreter finalisation,
    where gloo's worker threads abort the process ("terminate called without an active
    exception")."""
    if not dist.is_initialized():
        return
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def end_process(code: int) -> NoReturn:
    """Ends a process that ran collectives (after ``shutdown``) with exit status ``code``,
    without the interpreter's finalisation.

    gloo's worker threads release the tensors of the collectives they ran after those
    collectives have completed, so one can still be releasing a tensor that Python owns (which
    takes the GIL) after the last barrier and ``destroy_process_group`` (which does not stop
    gloo's threads). If the interpreter is being finalised at that moment, the thread is torn
    down inside C++ code and the process aborts ("terminate called without an active
    exception", SIGABRT; pytorch/pytorch#179291). So the exit handlers run here, with the
    interpreter whole, the output is flushed and the process ends at once (as Python's
    multiprocessing ends its child processes)."""
    atexit._run_exitfuncs()  # logging.shutdown and the rest of what a normal exit runs
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


def run_then_end(main: Callable[[], int]) -> NoReturn:
    """A console script's body: ``main()``'s status through `end_process`; an exception
    ``main`` lets out (a bug) prints its traceback and ends the same way with status 1, as
    Python would. ``SystemExit`` (``--help``, argparse errors: before any collective) passes."""
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        code = 1
    end_process(code)
