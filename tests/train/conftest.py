"""Fixtures of the training tests."""

from tests.train.inprocess import train  # noqa: F401  (fixture: one in-process lct-train run)
