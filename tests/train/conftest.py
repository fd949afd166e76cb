"""Fixtures of the training tests: reference training runs shared by the multi-process tests
(test_distributed.py, test_sp_train.py), started once per session on first use, and one
in-process lct-train run (`train`)."""

from __future__ import annotations

import pytest

from tests.train.inprocess import train  # noqa: F401  (fixture: one in-process lct-train run)
from tests.train.torchrun import DIST_COMMON, run


@pytest.fixture(scope="session")
def one_rank(tmp_path_factory):
    """1 rank x 2 micro-batches per step."""
    run_dir = tmp_path_factory.mktemp("one_rank")
    run(1, [*DIST_COMMON, f"run_dir={run_dir}", "optim.grad_accum=2"])
    return run_dir


@pytest.fixture(scope="session")
def two_ranks(tmp_path_factory):
    """2 ranks x 1 micro-batch per step: the same global batch."""
    run_dir = tmp_path_factory.mktemp("two_ranks")
    run(2, [*DIST_COMMON, f"run_dir={run_dir}"])
    return run_dir
