"""The run directory's own files: a writability check before anything is written, and the
resolved config of every start.

``config.yaml`` is the config of the latest start; ``configs/start-<NNNN>.yaml`` keeps each
start's config (never overwritten), headed by when it started and from which checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lct_train.core.errors import ConfigError
from lct_train.core.files import write_atomic

CONFIG_FILE = "config.yaml"
CONFIGS_DIR = "configs"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while path != path.parent:
        try:
            if path.exists():
                break
        except PermissionError as err:  # a directory above it cannot be searched
            raise ConfigError("run_dir", f"cannot look for {path}: permission denied in "
                                         f"{path.parent}") from err
        path = path.parent
    return path


def check_writable(run_dir: Path) -> None:
    """``ConfigError('run_dir', ...)`` unless ``run_dir`` (or the directory it would be created
    in) is a writable directory. Writes nothing."""
    base = _nearest_existing(run_dir)
    if not base.is_dir():
        raise ConfigError("run_dir", f"cannot create {run_dir}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        what = "is" if base == run_dir.absolute() else f"would be created in {base}, which is"
        raise ConfigError("run_dir", f"{run_dir} {what} not writable")


def save_start_config(run_dir: Path, yaml_text: str, source: str) -> Path:
    """Writes ``config.yaml`` and a new ``configs/start-<NNNN>.yaml``; returns the latter."""
    history = run_dir / CONFIGS_DIR
    history.mkdir(parents=True, exist_ok=True)
    number = len(list(history.glob("start-*.yaml"))) + 1
    path = history / f"start-{number:04d}.yaml"
    while path.exists():
        number += 1
        path = history / f"start-{number:04d}.yaml"
    header = (f"# start {number} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
              f"weights: {source}\n")
    write_atomic(path, header + yaml_text)
    write_atomic(run_dir / CONFIG_FILE, yaml_text)
    return path
