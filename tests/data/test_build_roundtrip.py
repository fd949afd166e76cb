"""Real shards written by ``lct-shards build`` and read back (format, values, resume, webdataset)."""

from __future__ import annotations

import json

import torch
import webdataset as wds
from safetensors.torch import load

from data_tools.cli import main as cli_main
from data_tools.manifest import read_manifest
from data_tools.resize import target_size
from data_tools.scene_encoder import FrameSpec, shot_pixels
from lct_train.data.codecs import PixelCodec, frames_to_tensor
from lct_train.data.schema import DatasetInfo, load_empty_prompt
from lct_train.data.text_encoders import TinyTextEncoder
from tests.data.conftest import TINY_AREA, TINY_SYNTH, build_tiny


def test_dataset_files_and_info(dataset_dir):
    info = DatasetInfo.read(dataset_dir)
    assert info.latent_channels == 12
    assert info.text_dim == TinyTextEncoder().text_dim
    assert info.image_frame == "any"
    shards = sorted((dataset_dir / "shards").glob("*.tar"))
    assert len(shards) == TINY_SYNTH["num_scenes"]
    assert not list((dataset_dir / "shards").glob("*.tmp"))
    tokens, pooled = load_empty_prompt(dataset_dir)
    assert tokens.shape[1] == info.text_dim
    assert pooled.shape == (info.pooled_dim,)


def test_latents_match_decoded_frames(dataset_dir, synth_dir):
    scenes = {s.key: s for s in read_manifest(synth_dir / "manifest.jsonl")}
    codec = PixelCodec(2)
    samples = list(wds.WebDataset([str(p) for p in sorted((dataset_dir / "shards").glob("*.tar"))],
                                  shardshuffle=False))
    assert len(samples) == TINY_SYNTH["num_scenes"]
    for sample in samples[:3]:
        meta = json.loads(sample["json"])
        scene = scenes[sample["__key__"]]
        latents = load(sample["latents.safetensors"])
        text = load(sample["text.safetensors"])
        assert meta["num_shots"] == len(scene.shots) == len(latents)
        assert text["pooled"].shape[0] == len(scene.shots) + 1
        for i, shot in enumerate(scene.shots):
            x = frames_to_tensor(shot_pixels(shot, FrameSpec(8.0, TINY_AREA, 4), codec))
            assert latents[f"shot_{i}"].shape == (12, x.shape[0], 16, 16)
            assert (codec.decode(latents[f"shot_{i}"]) - x).abs().max() < 1e-6
        assert meta["shot_prompts"][0].startswith("[SHOT CUT] ") == scene.shots[0].cut


def test_target_size_keeps_aspect_and_multiple():
    h, w = target_size(480, 854, 480 * 480, 16)
    assert h % 16 == 0
    assert w % 16 == 0
    assert abs(h * w / (480 * 480) - 1) < 0.1
    assert abs(w / h - 854 / 480) < 0.1


def test_build_resume_skips_done_and_rebuilds_partial(synth_dir, tmp_path):
    out = tmp_path / "ds"
    first = build_tiny(synth_dir / "manifest_multishot.jsonl", out, scenes_per_shard=2)
    assert first["skipped_done"] == 0
    shard_dir = out / "shards"
    done = sorted((shard_dir / ".done").glob("*.json"))
    victim = json.loads(done[0].read_text())["shards"][0]
    before = (shard_dir / victim).read_bytes()
    done[0].unlink()  # chunk 0 "crashed": marker missing, a stale temp part lying around
    (shard_dir / "000000-001.tar.tmp").write_bytes(b"half")
    again = build_tiny(synth_dir / "manifest_multishot.jsonl", out, scenes_per_shard=2)
    assert again["skipped_done"] == first["chunks"] - 1
    assert again["scenes_built"] == 2
    assert not list(shard_dir.glob("*.tmp"))
    assert (shard_dir / victim).read_bytes() == before  # deterministic rebuild


def test_cli_verify_and_inspect(dataset_dir, capsys):
    assert cli_main(["verify", str(dataset_dir)]) == 0
    assert f"{TINY_SYNTH['num_scenes']} good, 0 bad" in capsys.readouterr().out
    assert cli_main(["inspect", str(dataset_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenes"] == TINY_SYNTH["num_scenes"]
    assert sum(c for _, _, c in report["tokens_histogram"]) == report["scenes"]


def test_ranks_write_disjoint_shards(synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    monkeypatch.setenv("WORLD_SIZE", "2")
    built = []
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        built.append(build_tiny(synth_dir / "manifest_multishot.jsonl", out, scenes_per_shard=2)["scenes_built"])
    total = len(read_manifest(synth_dir / "manifest_multishot.jsonl"))
    assert sum(built) == total
    assert min(built) > 0
    markers = [json.loads(p.read_text()) for p in (out / "shards" / ".done").glob("*.json")]
    names = [n for m in markers for n in m["shards"]]
    assert len(names) == len(set(names))
    assert sum(m["scenes"] for m in markers) == total


def test_build_with_tiny_hunyuan_vae(synth_dir, tmp_path):
    out = tmp_path / "ds"
    build_tiny(synth_dir / "manifest_segments.jsonl", out, vae="tiny-hunyuan", area=64 * 64,
               scenes_per_shard=4, max_frames=5)
    info = DatasetInfo.read(out)
    assert info.image_frame == "first"
    assert info.temporal_factor == 4
    sample = next(iter(wds.WebDataset(str(sorted((out / "shards").glob("*.tar"))[0]), shardshuffle=False)))
    z = load(sample["latents.safetensors"])["shot_0"]
    assert z.shape[0] == info.latent_channels
    assert z.shape[2:] == (8, 8)


def test_rank_device_maps_cuda_to_the_local_rank(monkeypatch):
    from data_tools.build import rank_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda") == "cuda:3"
    assert rank_device("cuda", local_rank=1) == "cuda:1"
    assert rank_device("cuda:0") == "cuda:0"  # explicit: kept
    assert rank_device("cpu") == "cpu"
    assert rank_device("auto") == ("cuda:3" if torch.cuda.is_available() else "cpu")


def test_workers_are_spawned_and_build_their_own_encoders(synth_dir, tmp_path):
    """``--workers 2``: spawned processes (no fork after CUDA init) write every scene."""
    from data_tools import build as build_mod

    assert build_mod.worker_context().get_start_method() == "spawn"
    out = tmp_path / "ds"
    summary = build_tiny(synth_dir / "manifest_multishot.jsonl", out, scenes_per_shard=1,
                         workers=2)
    total = len(read_manifest(synth_dir / "manifest_multishot.jsonl"))
    assert summary["scenes_built"] == total
    assert summary["device"] == "cpu"
    markers = [json.loads(p.read_text()) for p in (out / "shards" / ".done").glob("*.json")]
    assert sum(m["scenes"] for m in markers) == total
