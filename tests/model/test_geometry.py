"""Scene geometry (model.geometry): patch grid, scene spec and token count, patchify."""

import math

import pytest
import torch

from lct_train.model.geometry import patch_grid, patchify, scene_spec, unpatchify


def test_patchify_matches_conv3d_weight_order_and_round_trips():
    channels, patch = 3, (1, 2, 2)
    latent = torch.randn(channels, 2, 4, 6, dtype=torch.float64)
    tokens = patchify(latent, patch)
    assert tokens.shape == (2 * 2 * 3, channels * 4)
    conv = torch.nn.Conv3d(channels, 5, kernel_size=patch, stride=patch, dtype=torch.float64)
    expected = conv(latent[None])[0].flatten(1).T  # (f, y, x) row-major tokens
    torch.testing.assert_close(tokens @ conv.weight.flatten(1).T + conv.bias, expected)
    torch.testing.assert_close(unpatchify(tokens, (2, 2, 3), patch, channels), latent)
    with pytest.raises(ValueError, match="not divisible"):
        patchify(latent[:, :, :3], patch)
    with pytest.raises(ValueError, match="tokens must have shape"):
        unpatchify(tokens[1:], (2, 2, 3), patch, channels)


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 1, 2)])
def test_patchify_into_rows_matches_patchify(patch):
    latent = torch.randn(3, 4, 6, 8)
    expected = patchify(latent, patch)
    rows = torch.full((expected.shape[0] + 2, expected.shape[1]), -1.0)
    out = patchify(latent, patch, out=rows[1:-1])
    assert out.data_ptr() == rows[1].data_ptr()
    assert torch.equal(rows[1:-1], expected)
    assert bool((rows[0] == -1).all())  # the neighbouring rows are untouched
    assert bool((rows[-1] == -1).all())


def test_patch_grid_divides_and_names_the_misfit():
    assert patch_grid((16, 5, 6, 8), (1, 2, 2)) == (5, 3, 4)
    with pytest.raises(ValueError, match=r"latent \(F, H, W\)=\(5, 7, 8\) is not divisible"):
        patch_grid((16, 5, 7, 8), (1, 2, 2))
    with pytest.raises(ValueError, match=r"must be \[C, F, H, W\]"):
        patch_grid((5, 6, 8), (1, 2, 2))


def test_scene_spec_global_group_first_and_token_count():
    shapes = [(4, 3, 4, 6), (4, 1, 2, 2)]
    spec = scene_spec([7, 5, 2], shapes, (1, 2, 2), (1, 1, 2))
    assert [g.is_global for g in spec.groups] == [True, False, False]
    assert [g.grid for g in spec.groups] == [(1, 1, 2), (3, 2, 3), (1, 1, 1)]
    video = sum(math.prod(s[1 + d] // p for d, p in enumerate((1, 2, 2))) for s in shapes)
    assert spec.num_tokens == 7 + 5 + 2 + 2 + video
    with pytest.raises(ValueError, match="one per shot plus the global group"):
        scene_spec([7, 5], shapes, (1, 2, 2), (1, 1, 2))
