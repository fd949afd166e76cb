"""Fixtures of the sampling tests: a tiny random LCT model (fp64), the tiny text encoder and the
pixel codec, and a sampler factory; the same for a tiny Wan (``wan_*``), and ``family_kit``, a
(sampler factory, prompt encoder) pair parametrized over both families."""

from __future__ import annotations

import pytest
import torch

from lct_train.data.codecs import PixelCodec
from lct_train.data.text_encoders import TinyTextEncoder
from lct_train.model.config import ModelConfig
from lct_train.model.mmdit import LCTModel
from lct_train.sample.prompts import PromptEncoder
from lct_train.sample.sampler import Sampler, SamplingSettings
from tests.sample.tiny import (
    PIXEL_FACTOR,
    tiny_config,
    tiny_model,
    tiny_wan_config,
    tiny_wan_model,
)


@pytest.fixture(scope="session")
def config() -> ModelConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def model(config) -> LCTModel:
    return tiny_model(config)


@pytest.fixture(scope="session")
def prompts(config) -> PromptEncoder:
    return PromptEncoder(TinyTextEncoder(config.text_dim, config.pooled_dim), config)


@pytest.fixture(scope="session")
def codec() -> PixelCodec:
    return PixelCodec(PIXEL_FACTOR)


def sampler_factory(model, config, prompts):
    def make(mask: str = "causal", window: int = 9, **settings) -> Sampler:
        settings = {"steps": 3, "guidance": 3.0, "t_c": 0.3, **settings}
        return Sampler(model, config, prompts.empty, mask=mask, window=window,
                       settings=SamplingSettings(**settings))

    return make


@pytest.fixture
def make_sampler(model, config, prompts):
    return sampler_factory(model, config, prompts)


@pytest.fixture(scope="session")
def wan_config():
    return tiny_wan_config()


@pytest.fixture(scope="session")
def wan_model(wan_config):
    return tiny_wan_model(wan_config)


@pytest.fixture(scope="session")
def wan_prompts(wan_config) -> PromptEncoder:
    return PromptEncoder(TinyTextEncoder(wan_config.text_dim), wan_config)


@pytest.fixture(params=["mmdit", "wan"])
def family_kit(request):
    """``(make_sampler, prompts)`` of the MMDiT, then of Wan."""
    if request.param == "wan":
        names = ("wan_model", "wan_config", "wan_prompts")
    else:
        names = ("model", "config", "prompts")
    model, config, prompts = (request.getfixturevalue(n) for n in names)
    return sampler_factory(model, config, prompts), prompts


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny tensors here gain nothing from threads, and on a shared CPU two threads per
    op made these tests ~30x slower; the session setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
