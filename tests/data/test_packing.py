"""Token-budget packing and augmentation: bounds, layout of PackedScenes, seeded augmentations."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from lct_train.data.config import DataConfig
from lct_train.data.loader import SceneLoader
from lct_train.data.packing import BestFitPacker, patchify_into
from lct_train.data.schema import load_empty_prompt
from lct_train.model.layout import patchify


def take(cfg, n, **kw):
    return list(itertools.islice(iter(SceneLoader(cfg, **kw)), n))


def spec_tokens(spec):
    return sum(g.text_len + math.prod(g.grid) for g in spec.groups)


@pytest.mark.parametrize("max_tokens", [700, 2048])
def test_batches_respect_budget_and_layout(make_cfg, max_tokens):
    cfg = make_cfg(max_tokens=max_tokens, packing_lookahead=8)
    for b in take(cfg, 8):
        video = sum(math.prod(g.grid) for s in b.specs for g in s.groups)
        text = sum(g.text_len for s in b.specs for g in s.groups)
        assert b.video.shape == (video, 12 * 4)
        assert b.text.shape[0] == text
        assert b.num_tokens == sum(spec_tokens(s) for s in b.specs) <= max_tokens
        assert b.pooled.shape[0] == sum(len(s.groups) for s in b.specs)
        assert b.shot_is_image.numel() == sum(len(s.groups) - 1 for s in b.specs)
        assert all(s.groups[0].is_global and s.groups[0].grid == cfg.dummy_grid for s in b.specs)
        assert b.stats["packing_efficiency"] == pytest.approx(b.num_tokens / max_tokens)
        assert (b.video[0] == 0).all()  # the first scene's dummy token


def test_video_stream_is_patchified_latents(make_cfg, dataset_dir):
    b = take(make_cfg(max_tokens=4096), 1)[0]
    spec = b.specs[0]
    dummy = math.prod(spec.groups[0].grid)
    first = spec.groups[1]
    rows = b.video[dummy : dummy + math.prod(first.grid)]
    latent = torch.randn(12, first.grid[0], first.grid[1] * 2, first.grid[2] * 2)
    assert patchify(latent, (1, 2, 2)).shape == rows.shape
    assert rows.abs().max() <= 1.0 + 1e-6
    assert rows.std() > 0


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 1, 2)])
def test_patchify_into_matches_layout_patchify(patch):
    latent = torch.randn(3, 4, 6, 8)
    out = torch.empty(patchify(latent, patch).shape)
    patchify_into(out, latent, patch)
    assert torch.equal(out, patchify(latent, patch))


def test_over_budget_cut_keeps_global_and_first_shots(make_cfg):
    budget = 800
    cutter = SceneLoader(make_cfg(max_tokens=budget, packing="cut"))
    cut = list(itertools.islice(iter(cutter), 10))
    assert cutter.counters()["loader/truncated"] > 0
    assert all(s.groups[0].is_global for b in cut for s in b.specs)
    skipper = SceneLoader(make_cfg(max_tokens=budget, packing="skip"))
    skipped = list(itertools.islice(iter(skipper), 10))
    assert skipper.counters()["loader/skipped_over_budget"] > 0
    assert all(b.num_tokens <= budget for b in cut + skipped)


def test_best_fit_packer_prefers_oldest_then_largest():
    packer = BestFitPacker(max_tokens=100, lookahead=4)
    for key, tokens in (("a", 50), ("b", 30), ("c", 45), ("d", 5)):
        packer.add(SimpleNamespace(key=key, tokens=tokens))
    assert [i.key for i in packer.take()] == ["a", "c", "d"]
    with pytest.raises(ValueError, match="max_tokens"):
        packer.add(SimpleNamespace(key="big", tokens=101))


def test_image_substitution_and_prompt_dropout(make_cfg, dataset_dir):
    images = take(make_cfg(p_image=1.0, max_tokens=2048), 4)
    for b in images:
        assert b.shot_is_image.all()
        assert all(g.grid[0] == 1 for s in b.specs for g in s.groups)
    tokens, pooled = load_empty_prompt(dataset_dir)
    dropped = take(make_cfg(p_drop_global=1.0, p_drop_shot=1.0, max_tokens=2048), 2)
    for b in dropped:
        assert all(g.text_len == tokens.shape[0] for s in b.specs for g in s.groups)
        assert torch.allclose(b.pooled, pooled.expand_as(b.pooled))
        assert torch.allclose(b.text[: tokens.shape[0]], tokens)
    kept = take(make_cfg(max_tokens=2048), 2)
    assert not torch.allclose(kept[0].pooled[0], pooled)


def test_context_window_truncation(make_cfg):
    for b in take(make_cfg(max_shots=1, max_tokens=4096), 6):
        assert all(len(s.groups) == 2 for s in b.specs)


def test_source_mixing_by_weight(dataset_dir, synth_dir, tmp_path):
    from .conftest import build_tiny

    segments = tmp_path / "segments"
    build_tiny(synth_dir / "manifest_segments.jsonl", segments)
    n_seg = len(list((segments / "shards").glob("*.tar")))
    cfg = DataConfig(sources=[{"path": str(dataset_dir), "weight": 3.0, "name": "all"},
                              {"path": str(segments), "weight": 1.0, "name": "seg"}],
                     max_tokens=4096, num_workers=0, shuffle_buffer=2, packing_lookahead=1)
    assert n_seg >= 1
    sources = [s for b in take(cfg, 200) for s in b.sources]
    share = sources.count("seg") / len(sources)
    assert 0.15 < share < 0.35


@pytest.mark.parametrize(("key", "value"), [("max_tokens", 0), ("packing", "pad"), ("p_image", 1.5),
                                            ("patch_size", (1, 2)), ("resume_policy", "maybe")])
def test_config_errors_name_the_key(dataset_dir, key, value):
    with pytest.raises(ValueError, match=f"data.{key}"):
        DataConfig(sources=[{"path": str(dataset_dir)}], **{key: value})
