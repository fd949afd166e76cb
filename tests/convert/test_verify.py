"""`lct-convert verify`: shape check, parameter count, checksum, output comparison."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lct_train.convert.cli import main
from lct_train.convert.verify import verify
from lct_train.core.errors import ConversionError
from tests.convert.tiny_hunyuan import make_tiny_diffusers


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_diffusers_dir):
    out = tmp_path_factory.mktemp("verify") / "lct"
    assert main(["import-diffusers", str(tiny_diffusers_dir), str(out)]) == 0
    return out


def test_import_matches_diffusers_reference(imported, tiny_diffusers, tiny_diffusers_dir, capsys):
    report = verify(imported, reference=tiny_diffusers_dir)
    assert report.ok
    assert report.kind == "lct"
    assert report.num_params == sum(p.numel() for p in tiny_diffusers.parameters())
    assert main(["verify", str(imported), "--reference", str(tiny_diffusers_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{report.num_params:,}" in out
    assert report.checksum in out
    assert "OK" in out


def test_diffusers_directory_is_verified_too(tiny_diffusers_dir, imported):
    report = verify(tiny_diffusers_dir, reference=imported)
    assert report.kind == "diffusers"
    assert report.ok


def test_checksum_tracks_content(imported, tmp_path):
    first = verify(imported).checksum
    assert verify(imported).checksum == first
    changed = tmp_path / "changed"
    assert main(["init", str(imported), str(changed)]) == 0
    assert verify(changed).checksum == first
    tensors = load_file(changed / "model.safetensors")
    tensors["proj_out.bias"][0] += 1.0
    save_file(tensors, changed / "model.safetensors")
    assert verify(changed).checksum != first


def test_perturbed_weights_fail_reference_and_nan_is_reported(
    imported, tiny_diffusers_dir, tmp_path
):
    bad = tmp_path / "bad"
    assert main(["init", str(imported), str(bad)]) == 0
    tensors = load_file(bad / "model.safetensors")
    tensors["transformer_blocks.0.attn.norm_k.weight"] *= 1.5
    save_file(tensors, bad / "model.safetensors")
    assert not verify(bad, reference=tiny_diffusers_dir).ok
    assert main(["verify", str(bad), "--reference", str(tiny_diffusers_dir)]) == 1
    tensors["proj_out.weight"][0, 0] = torch.nan
    save_file(tensors, bad / "model.safetensors")
    report = verify(bad)
    assert report.nonfinite == {"proj_out.weight": 1}
    assert not report.ok


def test_reference_of_another_architecture_is_refused(imported, tiny_diffusers_dir, tmp_path):
    rope = tmp_path / "rope"
    assert main(["init", str(imported), str(rope), "--set", "text_rope=true"]) == 0
    with pytest.raises(ConversionError, match="text_rope: True vs False"):
        verify(rope, reference=tiny_diffusers_dir)
    with pytest.raises(ConversionError, match="diffusers has no text RoPE"):
        verify(rope / "model.safetensors", reference=tiny_diffusers_dir)
    with pytest.raises(ConversionError, match="text_rope: False vs True"):
        verify(imported, reference=rope)
    bigger = tmp_path / "bigger"
    make_tiny_diffusers(num_single_layers=2).save_pretrained(bigger, safe_serialization=True)
    with pytest.raises(ConversionError, match="num_single_blocks: 1 vs 2"):
        verify(imported, reference=bigger)
    assert main(["verify", str(imported), "--reference", str(bigger)]) == 2  # refused
