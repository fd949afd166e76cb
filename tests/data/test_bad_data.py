"""Bad input never crashes or hangs: truncated tars, missing keys, wrong shapes, NaN latents."""

from __future__ import annotations

import itertools
import json
import logging
import shutil

import pytest
import torch
import webdataset as wds
from safetensors.torch import load, save

from data_tools.cli import main as cli_main
from lct_train.data.loader import SceneLoader
from lct_train.data.schema import CHECKSUM_EXT, SAMPLE_EXTS, member_checksum
from lct_train.data.stream import EmptyDatasetError
from lct_train.data.worker import DataQualityError


def copy_dataset(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".done"))
    return sorted((dst / "shards").glob("*.tar"))


def rewrite(shard, change, checksums=True):
    """Rewrites every sample of a shard through ``change``, as a faulty producer would: the
    member checksums are recomputed, so what is tested is the check of the content itself."""
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    with open(shard, "wb") as f, wds.TarWriter(f) as w:
        for s in samples:
            s = change(dict(s))
            w.write(with_checksums(s) if checksums else s)
    return [s["__key__"] for s in samples]


def with_checksums(s):
    sums = {ext: member_checksum(s[ext]) for ext in SAMPLE_EXTS if ext in s}
    return {**s, CHECKSUM_EXT: json.dumps(sums).encode()}


def nan_latents(s):
    lat = load(s["latents.safetensors"])
    lat["shot_0"][0, 0, 0, 0] = float("nan")
    s["latents.safetensors"] = save(lat)
    return s


def wrong_shape(s):
    lat = load(s["latents.safetensors"])
    lat["shot_0"] = lat["shot_0"][:5]
    s["latents.safetensors"] = save(lat)
    return s


def missing_text(s):
    del s["text.safetensors"]
    return s


@pytest.fixture
def corrupt_dir(dataset_dir, tmp_path):
    shards = copy_dataset(dataset_dir, tmp_path / "ds")
    bad = {}
    for shard, change in zip(shards, (nan_latents, wrong_shape, missing_text)):
        bad[rewrite(shard, change)[0]] = shard.name
    data = shards[3].read_bytes()
    shards[3].write_bytes(data[: len(data) // 2])  # truncated mid-member
    return tmp_path / "ds", bad, shards[3].name


def run(cfg, n):
    loader = SceneLoader(cfg)
    batches = list(itertools.islice(iter(loader), n))
    return loader, batches


def test_bad_samples_skipped_counted_logged(corrupt_dir, make_cfg, caplog):
    root, bad, truncated = corrupt_dir
    cfg = make_cfg(sources=[{"path": str(root)}], max_bad_fraction=0.5, max_tokens=4096)
    with caplog.at_level(logging.WARNING):
        loader, batches = run(cfg, 12)
    keys = {k for b in batches for k in b.keys}
    assert not keys & set(bad)
    assert loader.counters()["loader/bad"] >= 4
    text = caplog.text
    for key, shard in bad.items():
        assert key in text
        assert shard in text
    assert truncated in text
    for b in batches:
        assert torch.isfinite(b.video).all()


def test_bad_fraction_stops_the_run(corrupt_dir, make_cfg):
    root, _, _ = corrupt_dir
    cfg = make_cfg(sources=[{"path": str(root)}], max_bad_fraction=0.05, bad_check_min_samples=4, max_tokens=4096)
    with pytest.raises(DataQualityError, match="max_bad_fraction"):
        run(cfg, 50)


def test_all_bad_dataset_is_an_error(dataset_dir, tmp_path, make_cfg):
    for shard in copy_dataset(dataset_dir, tmp_path / "ds"):
        rewrite(shard, missing_text)
    cfg = make_cfg(sources=[{"path": str(tmp_path / "ds")}], max_bad_fraction=1.0)
    with pytest.raises(EmptyDatasetError, match="no usable scene"):
        run(cfg, 1)


def test_all_over_budget_is_an_error(make_cfg):
    with pytest.raises(EmptyDatasetError, match="max_tokens"):
        run(make_cfg(packing="skip", max_tokens=16), 1)


def test_all_bad_with_workers_raises_in_main(dataset_dir, tmp_path, make_cfg):
    for shard in copy_dataset(dataset_dir, tmp_path / "ds"):
        rewrite(shard, nan_latents)
    cfg = make_cfg(sources=[{"path": str(tmp_path / "ds")}], num_workers=2, bad_check_min_samples=2)
    with pytest.raises(DataQualityError, match="NaN"):
        run(cfg, 1)


def test_shard_count_guard(make_cfg):
    with pytest.raises(ValueError, match=r"12 shards but 4 ranks x 4 workers = 16"):
        SceneLoader(make_cfg(num_workers=4), dp_rank=0, dp_world_size=4)


def test_no_shards_is_an_error(dataset_dir, tmp_path, make_cfg):
    copy_dataset(dataset_dir, tmp_path / "ds")
    for p in (tmp_path / "ds" / "shards").glob("*.tar"):
        p.unlink()
    with pytest.raises(ValueError, match=r"data\.sources\[0\]\.path: .* holds no shards"):
        SceneLoader(make_cfg(sources=[{"path": str(tmp_path / "ds")}]))


def test_verify_names_bad_shard_and_key(corrupt_dir, capsys):
    root, bad, truncated = corrupt_dir
    assert cli_main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    for key, shard in bad.items():
        assert any(key in line and shard in line for line in out.splitlines() if line.startswith("BAD"))
    assert truncated in out
