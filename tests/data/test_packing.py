"""Token-budget packing and augmentation: bounds, layout of PackedScenes, seeded augmentations."""

from __future__ import annotations

import itertools
import math
import tarfile
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load

from lct_train.data.augment import fit_windows
from lct_train.data.config import DataConfig
from lct_train.data.loader import SceneLoader
from lct_train.data.packing import BestFitPacker
from lct_train.data.schema import LATENTS_EXT, SHARDS_DIR, load_empty_prompt
from lct_train.model.geometry import patchify


def take(cfg, n, **kw):
    return list(itertools.islice(iter(SceneLoader(cfg, **kw)), n))


def shard_latents(dataset_dir) -> dict[str, list[torch.Tensor]]:
    """Every scene's ``shot_i`` latents in order, read straight from the shard tars."""
    out = {}
    for shard in sorted((dataset_dir / SHARDS_DIR).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if ext == LATENTS_EXT:
                    lat = load(tar.extractfile(member).read())
                    out[key] = [lat[f"shot_{i}"].float() for i in range(len(lat))]
    return out


def shot_rows(batch):
    """``(key, [video rows of each shot])`` per scene of ``batch``; dummy rows must be zero."""
    offset = 0
    for key, spec in zip(batch.keys, batch.specs):
        shots = []
        for g in spec.groups:
            rows = batch.video[offset : offset + g.video_len]
            offset += g.video_len
            if g.is_global:
                assert not rows.any()
            else:
                shots.append(rows)
        yield key, shots
    assert offset == batch.video.shape[0]


@pytest.mark.parametrize("max_tokens", [700, 2048])
def test_batches_respect_budget_and_layout(make_cfg, max_tokens):
    cfg = make_cfg(max_tokens=max_tokens, packing_lookahead=8)
    for b in take(cfg, 8):
        video = sum(math.prod(g.grid) for s in b.specs for g in s.groups)
        text = sum(g.text_len for s in b.specs for g in s.groups)
        assert b.video.shape == (video, 12 * 4)
        assert b.text.shape[0] == text
        assert b.num_tokens == sum(s.num_tokens for s in b.specs) <= max_tokens
        assert b.pooled.shape[0] == sum(len(s.groups) for s in b.specs)
        assert b.shot_is_image.numel() == sum(len(s.groups) - 1 for s in b.specs)
        assert all(s.groups[0].is_global and s.groups[0].grid == cfg.dummy_grid for s in b.specs)
        assert b.stats["packing_efficiency"] == pytest.approx(b.num_tokens / max_tokens)
        assert (b.video[0] == 0).all()  # the first scene's dummy token


def test_video_stream_is_patchified_latents(make_cfg, dataset_dir):
    """Augmentation off: every scene's video rows are its shards' shots, patchified, in order."""
    original = shard_latents(dataset_dir)
    cfg = make_cfg(max_tokens=4096)
    scenes = 0
    for b in take(cfg, 3):
        assert b.stats["loader/truncated"] == 0
        for key, shots in shot_rows(b):
            assert len(shots) == len(original[key])
            for rows, latent in zip(shots, original[key]):
                assert torch.equal(rows, patchify(latent, cfg.patch_size))
            scenes += 1
    assert scenes >= 3


def test_over_budget_cut_keeps_global_and_first_shots(make_cfg, dataset_dir):
    budget = 800
    cfg = make_cfg(max_tokens=budget, packing="cut")
    cutter = SceneLoader(cfg)
    cut = list(itertools.islice(iter(cutter), 10))
    assert cutter.counters()["loader/truncated"] > 0
    assert all(s.groups[0].is_global for b in cut for s in b.specs)
    original = shard_latents(dataset_dir)
    shortened = 0
    for b in cut:  # the trailing shots went: the kept ones are the scene's first k
        for key, shots in shot_rows(b):
            assert 1 <= len(shots) <= len(original[key])
            shortened += len(shots) < len(original[key])
            for rows, latent in zip(shots, original[key]):
                assert torch.equal(rows, patchify(latent, cfg.patch_size))
    assert shortened > 0
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


def test_fit_windows_cuts_prompts_to_a_wan_text_window():
    text = [torch.randn(n, 2) for n in (30, 5, 20)]
    cut = fit_windows(text, 24)  # the global prompt keeps half the window, the shots the rest
    assert [t.shape[0] for t in cut] == [12, 5, 12]
    assert all(torch.equal(c, t[: c.shape[0]]) for c, t in zip(cut, text))
    assert [t.shape[0] for t in fit_windows(text, 64)] == [30, 5, 20]  # fits: unchanged
    assert fit_windows(text, 0) is text  # no window (MMDiT)


def test_wan_geometry_batches_keep_the_text_window(make_cfg):
    """A Wan model's data: global groups without video rows, every shot's global + own prompt
    within the window, the video stream still the patchified shots."""
    cfg = make_cfg(max_tokens=2048, dummy_grid=(0, 0, 0), window_text_len=10)
    for b in take(cfg, 4):
        for spec in b.specs:
            glob, *shots = spec.groups
            assert glob.is_global
            assert glob.video_len == 0
            assert all(glob.text_len + g.text_len <= 10 for g in shots)
        assert b.text.shape[0] == sum(g.text_len for s in b.specs for g in s.groups)
        assert sum(len(shots) for _, shots in shot_rows(b)) == b.shot_is_image.numel()


def test_source_mixing_by_weight(dataset_dir, synth_dir, tmp_path):
    from tests.data.conftest import build_tiny

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


def test_prompts_cut_to_the_text_window_are_counted_and_warned_once(synth_dir, tmp_path, caplog):
    """One scene whose global + longest shot prompt exceed the window: every load of it counts
    in ``loader/text_cut``; the first one also logs one warning naming the scene and lengths."""
    from tests.data.conftest import build_tiny
    from tests.data.test_hunyuan_pipeline import _manifest

    build_tiny(_manifest(synth_dir, tmp_path, 1), tmp_path / "ds")
    with tarfile.open(next((tmp_path / "ds" / SHARDS_DIR).glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".text.safetensors"))
        key = member.name.removesuffix(".text.safetensors")
        text = load(tar.extractfile(member).read())
    lengths = [text[f"group_{g}"].shape[0] for g in range(len(text) - 1)]  # and "pooled"
    glob, longest = lengths[0], max(lengths[1:])
    window = glob + longest - 1
    cfg = DataConfig(sources=[{"path": str(tmp_path / "ds"), "name": "one"}], max_tokens=4096, num_workers=0,
                     shuffle_buffer=1, packing_lookahead=1, p_drop_global=0.0, p_drop_shot=0.0,
                     dummy_grid=(0, 0, 0), window_text_len=window)
    with caplog.at_level("WARNING", logger="lct_train.data.worker"):
        batches = take(cfg, 2)
    assert [b.stats["loader/text_cut"] for b in batches] == [1, 2]
    kept = min(glob, max(window // 2, window - longest))  # fit_windows: the global keeps half
    assert [r.getMessage() for r in caplog.records] == [
        f"source one: scene {key}: global prompt {glob} + longest shot prompt {longest} tokens exceed the "
        f"model's text window {window}: cut to {kept} + at most {window - kept} (counted as loader/text_cut)"]
    assert batches[0].specs[0].groups[0].text_len == kept
