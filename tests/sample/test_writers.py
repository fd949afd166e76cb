"""mp4 / contact sheet / latent writers: the files decode back to what was written."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lct_train.sample.writers import (
    CAPTION_HEIGHT,
    PAD,
    THUMB_HEIGHT,
    scene_frames,
    to_uint8_frames,
    write_contact_sheet,
    write_latents,
    write_mp4,
)


def _frames(t, h, w, value=128):
    return np.full((t, h, w, 3), value, dtype=np.uint8)


def test_mp4_has_the_frames_and_pads_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    write_mp4(path, _frames(5, 15, 21), fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5
    assert decoded[0].shape == (16, 22, 3)
    assert abs(int(decoded[2][7, 10, 0]) - 128) <= 3


def test_uint8_conversion_and_shape_check():
    video = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    frames = to_uint8_frames(video)
    assert frames.shape == (2, 2, 2, 3)
    assert frames[0].max() == 0
    assert frames[1].min() == 255
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        to_uint8_frames(torch.zeros(3, 2, 4, 4))


def test_scene_frames_centre_shots_and_hold_images():
    out = scene_frames([_frames(2, 4, 4, 10), _frames(1, 8, 6, 20)], fps=3)
    assert out.shape == (2 + 3, 8, 6, 3)
    assert out[0, 0, 0, 0] == 0
    assert out[0, 2, 1, 0] == 10
    assert (out[2:] == 20).all()


def test_contact_sheet_has_one_row_per_shot(tmp_path):
    path = tmp_path / "sheet.png"
    write_contact_sheet(path, [_frames(9, 16, 32), _frames(1, 16, 16)], ["#0", "#1"],
                        frames_per_row=3)
    sheet = Image.open(path)
    assert sheet.height == 2 * (CAPTION_HEIGHT + THUMB_HEIGHT + 2 * PAD)
    assert sheet.width == 3 * (2 * THUMB_HEIGHT + PAD) + PAD
    with pytest.raises(ValueError, match="2 shots but 1 captions"):
        write_contact_sheet(path, [_frames(1, 4, 4)] * 2, ["x"])


def test_latents_round_trip(tmp_path):
    latent = torch.randn(12, 2, 4, 4)
    write_latents(tmp_path / "z.safetensors", {"latent": latent})
    assert torch.equal(load_file(str(tmp_path / "z.safetensors"))["latent"], latent)


def test_contact_sheet_is_wide_enough_for_long_captions(tmp_path):
    path = tmp_path / "sheet.png"
    write_contact_sheet(path, [_frames(1, 8, 8)], ["a long caption " * 8])
    assert Image.open(path).width > 8 * (THUMB_HEIGHT // 8) + 2 * PAD


def test_sheet_grid_places_labelled_tiles_row_by_row(tmp_path):
    from lct_train.sample.writers import write_sheet_grid

    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    tiles = []
    for i, colour in enumerate(colours):
        Image.new("RGB", (40 + 10 * i, 30), colour).save(tmp_path / f"t{i}.png")
        tiles.append((tmp_path / f"t{i}.png", f"tile {i}"))
    out = tmp_path / "grid.png"
    write_sheet_grid(out, [tiles[:2], tiles[2:]], max_tile_width=45)
    with Image.open(out) as grid:
        pixels = np.asarray(grid.convert("RGB"))
    # row 0: tile 0 (40 wide) then tile 1 cropped to 45; row 1: tile 2 cropped to 45
    top = 14 + 4 + 15  # caption band, then the middle of a 30-pixel tile
    assert tuple(pixels[top, 20]) == colours[0]
    assert tuple(pixels[top, 40 + 8 + 20]) == colours[1]
    assert pixels.shape[1] == 40 + 45 + 4 * 4  # widths + 2 PAD after each tile
    row2 = pixels.shape[0] // 2 + top
    assert tuple(pixels[row2, 20]) == colours[2]
    assert tuple(pixels[row2, 45 + 4]) != colours[2]  # cropped at 45
