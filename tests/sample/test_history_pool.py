"""The history pool: accept / pending life cycle, context checks, disk round trip."""

from __future__ import annotations

import json

import pytest
import torch

from lct_train.sample.history_pool import POOL_FILE, HistoryPool, PoolError, PoolShot


def _shot(seed, context=()):
    return PoolShot(latent=torch.full((12, 1, 2, 2), float(seed)), prompt=f"p{seed}", seed=seed,
                    mode="ar", context=context)


def test_pending_shots_are_accepted_in_order_and_survive_a_round_trip(tmp_path):
    pool = HistoryPool(global_prompt="g", settings={"steps": 3})
    pool.add(_shot(0))
    pool.propose(_shot(1, (0,)))
    pool.save(tmp_path)
    loaded = HistoryPool.load(tmp_path)
    assert len(loaded) == 1
    assert loaded.pending.context == (0,)
    assert loaded.accept() == 1
    assert loaded.pending is None
    loaded.save(tmp_path)
    again = HistoryPool.load(tmp_path)
    assert [s.seed for s in again.shots] == [0, 1]
    assert again.settings == {"steps": 3}
    assert torch.equal(again.shots[1].latent, _shot(1).latent)
    assert not (tmp_path / "pending.safetensors").exists()
    assert json.loads((tmp_path / POOL_FILE).read_text())["shots"][1]["context"] == [0]


def test_context_must_name_accepted_shots():
    pool = HistoryPool()
    pool.add(_shot(0))
    with pytest.raises(PoolError, match=r"indices \[3\] are not in the pool"):
        pool.propose(_shot(1, (0, 3)))
    with pytest.raises(PoolError, match="repeats"):
        pool.check_context((0, 0))
    with pytest.raises(PoolError, match="no pending shot"):
        pool.accept()


def test_default_context_is_the_latest_window_minus_one():
    pool = HistoryPool(shots=[_shot(i) for i in range(5)])
    assert pool.default_context(3) == (3, 4)
    assert pool.default_context(9) == (0, 1, 2, 3, 4)


def test_loading_something_that_is_not_a_pool(tmp_path):
    with pytest.raises(PoolError, match="is not a history pool"):
        HistoryPool.load(tmp_path)
    pool = HistoryPool(shots=[_shot(0)])
    pool.save(tmp_path)
    (tmp_path / "shot_000.safetensors").unlink()
    with pytest.raises(PoolError, match=r"shot_000\.safetensors is missing"):
        HistoryPool.load(tmp_path)
