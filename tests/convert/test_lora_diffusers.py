"""LoRA adapters in diffusers' format: the file written by lct-train, loaded into diffusers'
HunyuanVideo transformer the way ``HunyuanVideoPipeline.load_lora_weights`` does (PEFT), gives
lct-train's merged model's output (fp32, <= 1e-5 relative); the reader gives the adapters back."""

from __future__ import annotations

import pytest
import torch

from lct_train.convert.cli import main
from lct_train.convert.lora_export import (
    LORA_FILE,
    diffusers_lora_state,
    read_diffusers_lora,
    write_diffusers_lora,
)
from lct_train.convert.reference import fixed_input, run_diffusers, run_lct
from lct_train.convert.verify import load_lct_model
from lct_train.core.errors import ConversionError
from lct_train.model.lora import apply_lora, is_adapter, match_targets, merge_lora, unwrap_lora
from lct_train.model.mmdit import LCTModel
from tests.convert.tiny_hunyuan import make_tiny_diffusers

RTOL = 1e-5
RANK, ALPHA = 4, 8.0
DIFFUSERS_TIMESTEP_SCALE = 1000.0


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_diffusers_dir):
    """The imported tiny model with random adapters on the default targets, and their file."""
    out = tmp_path_factory.mktemp("lora_import") / "lct"
    assert main(["import-diffusers", str(tiny_diffusers_dir), str(out)]) == 0
    model, cfg = load_lct_model(out)
    names, _ = match_targets(model, LCTModel.lora_targets)
    apply_lora(model, names, RANK, ALPHA, dropout=0.0)
    gen = torch.Generator().manual_seed(3)
    adapters = {}
    for name, param in model.named_parameters():
        if is_adapter(name):
            param.data = 0.2 * torch.randn(param.shape, generator=gen)
            adapters[name] = param.data.clone()
    lora_dir = tmp_path_factory.mktemp("lora_file")
    write_diffusers_lora(lora_dir, *diffusers_lora_state(adapters, RANK, ALPHA))
    return model.eval(), cfg, adapters, lora_dir


def test_diffusers_loads_the_file_and_matches_the_merged_model(adapted):
    from diffusers import HunyuanVideoPipeline

    model, cfg, _, lora_dir = adapted
    inp = fixed_input(cfg, seed=4)
    with_adapters = run_lct(model, cfg, inp)
    transformer = make_tiny_diffusers()  # the same seed: the base the LCT model was imported from
    base_out = run_diffusers(transformer, inp, DIFFUSERS_TIMESTEP_SCALE)
    state, metadata = HunyuanVideoPipeline.lora_state_dict(str(lora_dir), weight_name=LORA_FILE,
                                                           return_lora_metadata=True)
    HunyuanVideoPipeline.load_lora_into_transformer(state, transformer, metadata=metadata)
    got = run_diffusers(transformer, inp, DIFFUSERS_TIMESTEP_SCALE)
    merged = _merged_copy(model)
    want = run_lct(merged, cfg, inp)
    assert _relative_error(want, with_adapters) < RTOL  # merging = running the adapters
    assert _relative_error(base_out, want) > 1e-2  # the adapters change the output
    assert _relative_error(got, want) < RTOL


def _merged_copy(model):
    import copy

    merged = copy.deepcopy(model)
    merge_lora(merged)
    unwrap_lora(merged)
    return merged


def test_reader_gives_the_adapters_back(adapted, tmp_path):
    _, _, adapters, lora_dir = adapted
    got, rank, alpha = read_diffusers_lora(lora_dir)
    assert (rank, alpha) == (RANK, RANK)  # alpha / r folded into B (scale 1)
    assert got.keys() == adapters.keys()
    for name, value in adapters.items():
        scale = ALPHA / RANK if name.endswith("lora_B.weight") else 1.0
        torch.testing.assert_close(got[name], value * scale, rtol=0, atol=0, msg=name)
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"transformer.x.lora_A.weight": torch.zeros(2, 3)}, bad)
    with pytest.raises(ConversionError, match="without their pair"):
        read_diffusers_lora(bad)
