"""Fixtures of the conversion tests: a tiny random diffusers HunyuanVideo transformer, offline."""

from __future__ import annotations

import pytest

from tests.convert.tiny_hunyuan import make_tiny_diffusers


@pytest.fixture(scope="session")
def tiny_diffusers():
    return make_tiny_diffusers()


@pytest.fixture(scope="session")
def tiny_diffusers_dir(tmp_path_factory, tiny_diffusers):
    out = tmp_path_factory.mktemp("diffusers") / "transformer"
    tiny_diffusers.save_pretrained(out, safe_serialization=True)
    return out
