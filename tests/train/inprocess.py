"""Runs ``lct-train`` in the test process as a one-rank job (no torchrun start-up): for the
start-up checks, refusals and resume-line tests, which need no second rank."""

from __future__ import annotations

import socket

import pytest

from lct_train.train.main import main
from tests.train.torchrun import SYNTHETIC, with_base

ONE_RANK_ENV = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                    MASTER_ADDR="127.0.0.1")


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def train_in_process(*overrides: str) -> int:
    """One in-process run on synthetic data (for module fixtures: no capture); exit status."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**ONE_RANK_ENV, "MASTER_PORT": _free_port()}.items():
            patch.setenv(key, value)
        return main(with_base([*SYNTHETIC, *overrides]))


@pytest.fixture
def train(monkeypatch, capsys):
    """``train(*overrides) -> (exit status, stderr)`` of one in-process run on synthetic data."""

    def run(*overrides: str) -> tuple[int, str]:
        for key, value in ONE_RANK_ENV.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MASTER_PORT", _free_port())
        capsys.readouterr()
        status = main(with_base([*SYNTHETIC, *overrides]))
        return status, capsys.readouterr().err

    return run
