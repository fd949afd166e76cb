"""Shared test set-up: deterministic CPU torch, the gpu marker, small helpers."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_hunyuan_pipeline(tmp_path_factory):
    """A tiny random HunyuanVideo pipeline folder in the diffusers layout (tests/tiny_pipelines.py),
    built once per session. Read-only: copy it (shutil.copytree) before damaging it."""
    from tests.tiny_pipelines import save_tiny_hunyuan_pipeline

    return save_tiny_hunyuan_pipeline(tmp_path_factory.mktemp("tiny_hunyuan") / "pipeline")


@pytest.fixture(scope="session")
def tiny_wan_pipeline(tmp_path_factory):
    """A tiny random Wan2.1-layout pipeline folder (WanPipeline, 16-channel VAE) in the diffusers
    layout (tests/tiny_pipelines.py), built once per session. Read-only."""
    from tests.tiny_pipelines import save_tiny_wan_pipeline

    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("tiny_wan") / "pipeline")


@pytest.fixture(scope="session")
def tiny_wan22_pipeline(tmp_path_factory):
    """The same with Wan2.2 TI2V-5B's layout (48-channel 4x16x16 VAE, expand_timesteps)."""
    from tests.tiny_pipelines import save_tiny_wan_pipeline

    return save_tiny_wan_pipeline(tmp_path_factory.mktemp("tiny_wan22") / "pipeline", "2.2")
