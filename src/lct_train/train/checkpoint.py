"""DCP training checkpoints (design.md §6): atomic save, retention, resume, init loads.

Layout: ``<run_dir>/checkpoints/step-<NNNNNNNN>/`` holds the DCP files (``.metadata`` +
``__<rank>_0.distcp``) of the top-level keys ``model``, ``ema`` (when enabled), ``optimizer``,
``lr_scheduler``, ``train_state``, ``dataloader`` and ``rng``, plus ``lct_meta.json``
(resolved config incl. ``model``, step, git revision, world size).

Atomicity: all ranks write into ``step-N.tmp-<id>``; rank 0 then writes ``lct_meta.json`` (last,
fsynced; it lists every file's size and CRC-32, ``checkpoint_integrity``) and renames the
directory to ``step-N``. A directory without ``lct_meta.json`` is not a checkpoint, so a kill at
any moment leaves the newest *valid* checkpoint loadable. Partial ``*.tmp-*`` directories are
removed and complete ones renamed when the next run starts (``checkpoint_lineage``). Re-saving
an existing step sets the old copy aside (never deletes it) before the rename.

Per-rank state (loader position, RNG) is stored under ``dp_rank_<r>`` keys of its top-level
entry, next to ``world_size``; it can only be restored on the same data-parallel size (see
``checkpoint.skip_loader_state_on_world_change``). Model, EMA and optimizer are DTensors and
reshard freely (save on 2 ranks, load on 1 and the reverse).

Naming, what counts as a checkpoint, newest-valid resolution and ``lct_meta.json`` reading are
``lct_train.core.checkpoint_layout`` (shared with convert and sample).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lct_train.core.checkpoint_layout import (
    FORMAT,
    META_FILE,
    TMP_MARK,
    checkpoint_root,
    list_checkpoints,
    step_name,
)
from lct_train.train import checkpoint_integrity as integrity
from lct_train.train.checkpoint_lineage import SET_ASIDE_DIR, set_aside, stamp

LOW_DISK_BYTES = 64 << 20  # below this much free space a failed write is a full disk


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the message names the path."""


def _os_reason(err: BaseException) -> str:
    """The OS error behind a failed write, on one line (DCP wraps each rank's in its own)."""
    if isinstance(err, CheckpointException):
        causes = [exc for exc, _ in err.failures.values()]
        err = next((c for c in causes if isinstance(c, OSError)), causes[0] if causes else err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} (writing {err.filename})" if err.filename else err.strerror
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _write_failure(err: BaseException, where: Path) -> str:
    """Why a save failed. torch's zip writer turns a full disk into "unexpected pos ...", so a
    nearly full disk is named as such whatever the writer said."""
    reason = _os_reason(err)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(where).free
        if free < LOW_DISK_BYTES and "No space left" not in reason:
            reason = f"No space left on device ({free} bytes free; the writer said: {reason})"
    return reason


def retained_steps(steps: list[int], keep_last: int, keep_every: int) -> set[int]:
    """The newest ``keep_last`` steps plus every multiple of ``keep_every`` (> 0)."""
    keep = set(sorted(steps)[-keep_last:]) if keep_last > 0 else set()
    if keep_every > 0:
        keep |= {s for s in steps if s % keep_every == 0}
    return keep


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------- Stateful
class ModelState:
    """The bare model's FQN -> (sharded) tensor; DCP reshards on load. ``select(fqn)``: only
    those entries (a LoRA run saves its adapters, not the frozen base)."""

    def __init__(self, model: nn.Module, select: Callable[[str], bool] | None = None):
        self.model, self.select = model, select

    def state_dict(self) -> dict[str, Any]:
        return model_state(self.model, self.select)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state,
                             options=StateDictOptions(strict=self.select is None))


def model_state(model: nn.Module, select: Callable[[str], bool] | None = None) -> dict[str, Any]:
    state = get_model_state_dict(model)
    return state if select is None else {k: v for k, v in state.items() if select(k)}


class OptimizerState:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state)


class PerRankState:
    """Per-data-parallel-rank state (pickled) under ``dp_rank_<r>``, plus ``world_size``."""

    def __init__(self, rank: int, world_size: int, get: Callable[[], Any],
                 put: Callable[[Any], None]):
        self.rank, self.world_size, self.get, self.put = rank, world_size, get, put

    @property
    def key(self) -> str:
        return f"dp_rank_{self.rank}"

    def state_dict(self) -> dict[str, Any]:
        return {self.key: pickle.dumps(self.get()), "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self.world_size:
            raise RuntimeError(f"per-rank state saved on {state['world_size']} data-parallel "
                               f"ranks cannot load on {self.world_size}")
        self.put(pickle.loads(state[self.key]))


class DictState:
    """A plain dict of host values (train_state, lr scheduler)."""

    def __init__(self, get: Callable[[], dict], put: Callable[[dict], None]):
        self.get, self.put = get, put

    def state_dict(self) -> dict[str, Any]:
        return self.get()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.put(state)


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------------- manager
class CheckpointManager:
    """Saves and loads one run's checkpoints. Every method is called on all ranks.

    Constructing it writes nothing (a refused start leaves the run directory as it was); the
    trainer settles the directory (``checkpoint_lineage.settle``) once the start is accepted.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int, keep_every: int, rank: int,
                 world: int = 1):
        self.root = checkpoint_root(run_dir)
        self.keep_last, self.keep_every, self.rank, self.world = keep_last, keep_every, rank, world

    def _shared_id(self) -> str:
        box = [uuid.uuid4().hex[:12] if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save(self, step: int, states: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Writes ``step-N`` atomically; a write that fails (a full disk) raises
        ``CheckpointWriteError`` naming the path, and every earlier checkpoint stays as it was
        (the partial ``*.tmp-*`` directory has no meta file, so nothing ever resumes from it)."""
        final = self.root / step_name(step)
        tmp = self.root / f"{final.name}{TMP_MARK}{self._shared_id()}"
        try:
            self._write(step, states, meta, final, tmp)
        except (OSError, CheckpointException) as err:
            raise CheckpointWriteError(f"cannot save checkpoint step {step} to {tmp}: "
                                       f"{_write_failure(err, self.root)}") from None
        dist.barrier()
        return final

    def _write(self, step: int, states: dict[str, Any], meta: dict[str, Any], final: Path,
               tmp: Path) -> None:
        dcp.save(states, checkpoint_id=str(tmp))
        files = integrity.record_files(tmp, self.rank, self.world)
        if self.rank == 0:
            _write_json(tmp / META_FILE, {"format": FORMAT, "step": step, **meta,
                                          integrity.FILES_KEY: files})
            _fsync_dir(tmp)
            if final.exists():  # re-saving a step: keep the old copy (a kill here loses neither)
                set_aside([final], self.root / SET_ASIDE_DIR / f"{stamp()}-resaved")
            tmp.rename(final)
            _fsync_dir(self.root)
            self._purge(step)

    def _purge(self, just_saved: int) -> None:
        """Retention over the current line; never the checkpoint just written."""
        found = list_checkpoints(self.root)
        keep = retained_steps([s for s, _ in found], self.keep_last, self.keep_every)
        keep.add(just_saved)
        for step, path in found:
            if step not in keep:
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def load(path: Path, states: dict[str, Any]) -> None:
        dcp.load(states, checkpoint_id=str(path))


def load_model_weights(model: nn.Module, path: Path, key: str,
                       select: Callable[[str], bool] | None = None) -> None:
    """Loads the ``key`` weights (``model`` or ``ema``) of a training checkpoint into ``model``
    (sharded read through DCP: any saved world size); ``select``: only those FQNs."""
    target = model_state(model, select)
    dcp.load({key: target}, checkpoint_id=str(path))
    set_model_state_dict(model, target, options=StateDictOptions(strict=select is None))
