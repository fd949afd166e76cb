"""Silent corruption is caught: member checksums, the latent-magnitude bound, a truncated sample
counted once (issue 11, item 6)."""

from __future__ import annotations

import itertools
import json

import pytest
from safetensors.torch import load, save

from data_tools.cli import main as cli_main
from lct_train.data.loader import SceneLoader
from lct_train.data.schema import CHECKSUM_EXT, DATASET_FILE, LATENTS_EXT
from lct_train.data.tario import index_shard
from tests.data.test_bad_data import copy_dataset, rewrite

FLIPPED = 16


def flip_tensor_bytes(shard):
    """Inverts 16 bytes inside the first sample's latent tensor data, in place (the tar stays
    valid, the safetensors still parses); returns that sample's key."""
    ref = index_shard(str(shard))[0]
    _, offset, size = next(m for m in ref.members if m[0] == LATENTS_EXT)
    data = bytearray(shard.read_bytes())
    start = offset + size - 4 * FLIPPED  # inside the tensor data at the member's end
    data[start:start + FLIPPED] = bytes(b ^ 0xFF for b in data[start:start + FLIPPED])
    shard.write_bytes(bytes(data))
    return ref.key


def huge_latent(s):
    lat = load(s[LATENTS_EXT])
    lat["shot_0"][0, 0, 0, 0] = 3.0e38  # finite: passes a NaN/inf check
    s[LATENTS_EXT] = save(lat)
    return s


def loader_run(cfg, batches=12):
    loader = SceneLoader(cfg)
    got = list(itertools.islice(iter(loader), batches))
    return loader.counters(), {k for b in got for k in b.keys}


@pytest.fixture
def flipped(dataset_dir, tmp_path):
    shards = copy_dataset(dataset_dir, tmp_path / "ds")
    return tmp_path / "ds", flip_tensor_bytes(shards[0]), shards[0].name


def test_flipped_bytes_fail_verify_naming_shard_and_key(flipped, capsys):
    root, key, shard = flipped
    assert cli_main(["verify", str(root)]) == 1
    bad = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BAD")]
    assert len(bad) == 1
    for part in (shard, key, "checksum"):
        assert part in bad[0]


def test_flipped_bytes_are_skipped_and_counted_by_the_loader(flipped, make_cfg, caplog):
    root, key, _ = flipped
    counters, keys = loader_run(make_cfg(sources=[{"path": str(root)}], max_bad_fraction=0.5,
                                         max_tokens=4096))
    assert key not in keys
    assert counters["loader/bad"] >= 1
    assert f"key={key}" in caplog.text
    assert "checksum" in caplog.text


def test_finite_garbage_is_bounded(dataset_dir, tmp_path, make_cfg, capsys):
    shards = copy_dataset(dataset_dir, tmp_path / "ds")
    key = rewrite(shards[0], huge_latent)[0]
    root = tmp_path / "ds"
    assert cli_main(["verify", str(root)]) == 1
    assert "magnitude 3e+38" in capsys.readouterr().out
    opts = dict(sources=[{"path": str(root)}], max_bad_fraction=0.5, max_tokens=4096)
    counters, keys = loader_run(make_cfg(**opts))
    assert key not in keys
    assert counters["loader/bad"] >= 1
    # the bound is what catches it: switched off, the sample passes (it is finite)
    counters, keys = loader_run(make_cfg(**opts, max_latent_abs=0.0), batches=24)
    assert key in keys
    assert counters["loader/bad"] == 0


def test_a_truncated_sample_is_counted_once(dataset_dir, tmp_path, make_cfg):
    shards = copy_dataset(dataset_dir, tmp_path / "ds")
    ref = index_shard(str(shards[0]))[0]  # one scene per shard
    _, offset, size = ref.members[1]
    shards[0].write_bytes(shards[0].read_bytes()[: offset + size // 2])  # cut in its 2nd member
    refs = index_shard(str(shards[0]))
    assert len(refs) == 1
    assert "truncated" in refs[0].error
    loader = SceneLoader(make_cfg(sources=[{"path": str(tmp_path / "ds")}], max_bad_fraction=0.5,
                                  max_tokens=4096, shuffle_buffer=1))
    it = iter(loader)
    while loader.counters()["loader/seen"] < len(shards):  # one pass over every shard
        next(it)
    assert loader.counters()["loader/bad"] == 1


def test_a_missing_checksum_member_is_bad_when_the_dataset_records_them(dataset_dir, tmp_path,
                                                                        capsys):
    shards = copy_dataset(dataset_dir, tmp_path / "ds")
    key = rewrite(shards[0], lambda s: {k: v for k, v in s.items() if k != CHECKSUM_EXT},
                  checksums=False)[0]
    assert cli_main(["verify", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out
    assert key in out
    assert f"missing member {CHECKSUM_EXT}" in out
    # a dataset built before checksums existed (no member_checksums in dataset.json) still loads
    info = tmp_path / "ds" / DATASET_FILE
    info.write_text(json.dumps({**json.loads(info.read_text()), "member_checksums": ""}))
    assert cli_main(["verify", str(tmp_path / "ds")]) == 0
