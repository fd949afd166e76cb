"""``render_pool``: accepted shots are decoded once; later calls read their mp4s back."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import lct_train.sample.pipeline as pipeline
from lct_train.data.codecs import PixelCodec
from lct_train.sample.history_pool import HistoryPool, PoolShot


def _shot(seed, shape):
    gen = torch.Generator().manual_seed(seed)
    return PoolShot(latent=torch.rand(shape, generator=gen) * 2 - 1, prompt=f"shot {seed}",
                    seed=seed, mode="ar")


def test_accepted_shots_are_decoded_once(tmp_path, monkeypatch):
    decoded = []
    decode = pipeline.decode

    def counting(kit, shot):
        decoded.append(shot.seed)
        return decode(kit, shot)

    monkeypatch.setattr(pipeline, "decode", counting)
    kit = SimpleNamespace(codec=PixelCodec(1), fps=8)  # factor 1: odd sizes, padded mp4s
    pool = HistoryPool(shots=[_shot(0, (3, 2, 7, 9)), _shot(1, (3, 1, 8, 8))])
    pipeline.render_pool(pool, kit, tmp_path)
    assert decoded == [0, 1]
    first_sheet = (tmp_path / pipeline.CONTACT_SHEET).stat().st_size
    pool.propose(_shot(2, (3, 2, 8, 8)))
    pipeline.render_pool(pool, kit, tmp_path)
    assert decoded == [0, 1, 2]  # only the pending shot
    assert (tmp_path / pipeline.PENDING_VIDEO).is_file()
    assert (tmp_path / pipeline.CONTACT_SHEET).stat().st_size != first_sheet
    video = pipeline.accepted_frames(kit, pool.shots[0], tmp_path / "shot_000.mp4")
    assert video.shape == (2, 7, 9, 3)  # the even-size padding is cropped again
    (tmp_path / "shot_001.mp4").unlink()  # a missing mp4 is decoded and written again
    pipeline.render_pool(pool, kit, tmp_path)
    assert decoded == [0, 1, 2, 1, 2]
    assert (tmp_path / "shot_001.mp4").is_file()
