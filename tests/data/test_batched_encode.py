"""Batched VAE encoding in ``lct-shards build``: shots of one shape share a call, at most
``--encode-frames`` frames a call, latents exactly the per-shot ones in manifest order."""

from __future__ import annotations

import pytest
import torch

from data_tools.cli import main as cli_main
from data_tools.scene_encoder import encode_calls, encode_shots
from lct_train.data.codecs import PixelCodec, frames_to_tensor
from tests.data.conftest import build_tiny


class CountingCodec(PixelCodec):
    """The pixel codec, recording ``(shots, frames)`` of every ``encode_batch`` call."""

    def __init__(self):
        super().__init__(2)
        self.calls: list[tuple[int, int]] = []

    def encode_batch(self, shots):
        self.calls.append((len(shots), sum(x.shape[0] for x in shots)))
        return super().encode_batch(shots)


def pixels(t: int, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8)


def test_calls_group_shapes_in_order_under_the_cap():
    shapes = [(1, 8, 8), (4, 8, 8), (1, 8, 8), (4, 8, 8), (12, 8, 8), (4, 8, 8), (4, 16, 8), (1, 8, 8)]
    assert encode_calls(shapes, 10) == [[0, 2, 7], [1, 3], [4], [5], [6]]
    assert encode_calls(shapes, 1) == [[i] for i in range(len(shapes))]
    assert encode_calls([(1, 8, 8)] * 5, 2) == [[0, 1], [2, 3], [4]]


def test_encode_shots_is_per_shot_in_order_and_respects_the_cap():
    torch.manual_seed(0)
    shots = [pixels(1), pixels(4), pixels(1), pixels(4), pixels(12), pixels(4), pixels(4, 16, 8),
             *[pixels(1) for _ in range(9)]]
    codec = CountingCodec()
    latents = encode_shots(codec, shots, encode_frames=10)
    assert len(latents) == len(shots)
    for z, x in zip(latents, shots, strict=True):
        assert torch.equal(z, PixelCodec(2).encode(frames_to_tensor(x)))
    # images: 10 per call, then the last one; 4-frame shots two a call; the 12-frame shot alone
    assert codec.calls == [(10, 10), (2, 8), (1, 12), (1, 4), (1, 4), (1, 1)]
    assert all(frames <= 10 or n == 1 for n, frames in codec.calls)


def test_build_writes_the_same_shards_batched_or_one_shot_per_call(synth_dir, tmp_path, monkeypatch):
    calls = []
    batch = PixelCodec.encode_batch
    monkeypatch.setattr(PixelCodec, "encode_batch", lambda self, s: calls.append(len(s)) or batch(self, s))
    shards = {}
    for cap in (1, 64):
        calls.clear()
        build_tiny(synth_dir / "manifest.jsonl", tmp_path / str(cap), encode_frames=cap)
        shards[cap] = {p.name: p.read_bytes() for p in (tmp_path / str(cap) / "shards").glob("*.tar")}
        assert (max(calls) > 1) == (cap > 1)  # the scenes' equal-shape shots do share calls
    assert shards[1]
    assert shards[1] == shards[64]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_encode_frames_is_a_one_line_error(value, synth_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["build", str(synth_dir / "manifest.jsonl"), str(out), "--text-encoder", "tiny",
            "--encode-frames", value]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--encode-frames" in err[0]
    assert value in err[0]
    assert not out.exists()
