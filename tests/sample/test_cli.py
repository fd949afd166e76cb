"""``lct-sample`` end to end on a tiny random checkpoint: a scene file to mp4s + contact sheet,
the interactive pool commands (both on each family: ``family_ckpt``), and clear errors."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lct_train.sample.cli import main
from lct_train.sample.history_pool import HistoryPool
from tests.sample.tiny import tiny_model, tiny_wan_model, write_consolidated

SIZE = {"frames": 2, "height": 16, "width": 16}
TOOLS = ["--codec", "pixel:2", "--text-encoder", "tiny", "--no-progress"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, config):
    folder = tmp_path_factory.mktemp("ckpt")
    return str(write_consolidated(folder, config, tiny_model(config, torch.float32)))


@pytest.fixture(scope="module", params=["mmdit", "wan"])
def family_ckpt(request, tmp_path_factory, ckpt):
    """The MMDiT's ``ckpt``, then a tiny Wan's."""
    if request.param == "mmdit":
        return ckpt
    config = request.getfixturevalue("wan_config")
    folder = tmp_path_factory.mktemp("wan_ckpt")
    return str(write_consolidated(folder, config, tiny_wan_model(config, torch.float32)))


def _image(path, value):
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(path)
    return path


def _scene(tmp_path, **changes):
    _image(tmp_path / "character.png", 200)
    scene = {
        "global_prompt": "Character 1: a red fox. [Environment] a snowy forest.",
        "mode": "joint", "steps": 2, "guidance": 2.0, "t_c": 0.3, "seed": 1, "size": SIZE,
        "shots": [
            {"prompt": "Character 1 portrait.", "condition": "character.png",
             "size": {"frames": 1, "height": 16, "width": 16}},
            {"prompt": "Character 1 walks in."},
            {"prompt": "Character 1 keeps walking.", "cut": False},
        ],
        **changes,
    }
    scene = {k: v for k, v in scene.items() if v is not None}  # a key set to None: left out
    path = tmp_path / "scene.yaml"
    path.write_text(json.dumps(scene))
    return path


def _frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("mode", ["joint", "ar-kv"])
def test_scene_command_writes_latents_videos_and_contact_sheet(tmp_path, family_ckpt, mode):
    out = tmp_path / "out"
    mask = ["--mask", "causal"] if mode == "ar-kv" else []
    rc = main(["scene", str(_scene(tmp_path, key="synth-000004")), "--ckpt", family_ckpt, "--out",
               str(out), "--mode", mode, *mask, *TOOLS])
    assert rc == 0
    latents = [load_file(str(out / f"shot_{i:03d}.safetensors"))["latent"] for i in range(3)]
    assert [tuple(z.shape) for z in latents] == [(12, 1, 8, 8), (12, 2, 8, 8), (12, 2, 8, 8)]
    given = _frames(out / "shot_000.mp4")
    assert len(given) == 1
    assert abs(int(given[0][8, 8, 0]) - 200) <= 4
    assert [len(_frames(out / f"shot_{i:03d}.mp4")) for i in (1, 2)] == [2, 2]
    assert len(_frames(out / "scene.mp4")) == 24 + 2 + 2  # the image held one second
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height > 3 * 96
    pool = HistoryPool.load(out)
    assert [s.mode for s in pool.shots] == ["given", mode, mode]
    assert pool.shots[2].prompt == "Character 1 keeps walking."  # extension: no marker
    assert pool.shots[1].prompt.startswith("[SHOT CUT] ")
    # the lct-eval manifest, keyed by the scene it followed, with given shots and contexts
    (row,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["key"] == "synth-000004"
    assert [s["path"] for s in row["shots"]] == [f"shot_{i:03d}.mp4" for i in range(3)]
    assert [s["given"] for s in row["shots"]] == [True, False, False]
    assert row["shots"][2]["context"] == ([0] if mode == "joint" else [0, 1])
    assert all((out / s["path"]).is_file() for s in row["shots"])


def test_scene_rerun_into_the_same_folder_replaces_every_shot(tmp_path, ckpt):
    out = tmp_path / "out"
    args = ["--ckpt", ckpt, "--out", str(out), *TOOLS]
    assert main(["scene", str(_scene(tmp_path, seed=1)), *args]) == 0
    first = load_file(str(out / "shot_001.safetensors"))["latent"]
    first_video = _frames(out / "shot_001.mp4")
    assert main(["scene", str(_scene(tmp_path, seed=9)), *args]) == 0
    second = load_file(str(out / "shot_001.safetensors"))["latent"]
    assert not torch.equal(first, second)
    assert HistoryPool.load(out).shots[1].seed == second_seed(9)
    assert not all(np.array_equal(a, b) for a, b in zip(first_video, _frames(out / "shot_001.mp4")))


def second_seed(base: int) -> int:
    return base + 1  # shot i uses seed + i (scene file format)


def test_interactive_direction_on_a_pool(tmp_path, family_ckpt):
    pool_dir = str(tmp_path / "pool")
    base = ["--pool", pool_dir]
    assert main(["init", *base, "--global-prompt", "Character 1: a fox.", "--ckpt", family_ckpt,
                 "--mask", "causal", "--size", "2,16,16", "--steps", "2",
                 "--negative-prompt", "blurry, static", *TOOLS]) == 0
    assert HistoryPool.load(pool_dir).settings["negative_prompt"] == "blurry, static"
    char = _image(tmp_path / "c.png", 50)
    assert main(["add", *base, "--condition", str(char), "--prompt", "Character 1.",
                 "--no-progress"]) == 0
    assert main(["shot", *base, "--prompt", "Character 1 runs.", "--seed", "5",
                 "--no-progress"]) == 0
    first = HistoryPool.load(pool_dir).pending
    assert first.mode == "ar-kv"
    assert first.context == (0,)
    assert first.seed == 5
    assert (tmp_path / "pool" / "pending.mp4").is_file()
    assert main(["regenerate", *base, "--no-progress"]) == 0  # seed + 1
    second = HistoryPool.load(pool_dir).pending
    assert second.seed == 6
    assert not torch.equal(second.latent, first.latent)
    assert main(["regenerate", *base, "--seed", "5", "--mode", "ar", "--no-progress"]) == 0
    again = HistoryPool.load(pool_dir).pending  # recompute reproduces the KV-cache shot
    torch.testing.assert_close(again.latent, first.latent, rtol=1e-4, atol=1e-4)
    assert main(["accept", *base]) == 0
    assert main(["shot", *base, "--prompt", "Character 1 rests.", "--context", "1",
                 "--no-cut", "--no-progress"]) == 0
    assert main(["accept", *base]) == 0
    pool = HistoryPool.load(pool_dir)
    assert [s.context for s in pool.shots] == [(), (0,), (1,)]
    assert pool.shots[2].prompt == "Character 1 rests."
    assert pool.pending is None
    assert not (tmp_path / "pool" / "pending.mp4").exists()
    assert len(_frames(tmp_path / "pool" / "scene.mp4")) == 24 + 2 + 2
    assert main(["show", *base]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "ar-kv"], "mode 'ar-kv' needs a context-causal model"),
        (["--window", "2"], "3 shots in mode 'joint' exceed the model's window of 2"),
        (["--text-encoder", "minilm"], "--text-encoder minilm: text encoder gives text_dim=384"),
        (["--text-encoder", "bert"], "--text-encoder bert: unknown text encoder"),
    ],
)
def test_scene_command_errors(tmp_path, ckpt, capsys, args, message):
    rc = main(["scene", str(_scene(tmp_path)), "--ckpt", ckpt, "--out", str(tmp_path / "o"),
               *TOOLS, *args])
    assert rc == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after any loading progress bar
    assert last.startswith("lct-sample scene: error: ")
    assert message in last


def test_a_wan_window_over_the_text_length_is_one_line(tmp_path, wan_config, capsys):
    """Global + own prompt longer than a Wan's text_len (128 here): exit 2, nothing written."""
    folder = tmp_path / "wan_ckpt"
    ckpt = str(write_consolidated(folder, wan_config, tiny_wan_model(wan_config, torch.float32)))
    scene = _scene(tmp_path, global_prompt="Character 1: a red fox. " * 6)
    rc = main(["scene", str(scene), "--ckpt", ckpt, "--out", str(tmp_path / "out"), *TOOLS])
    assert rc == 2
    err = capsys.readouterr().err
    assert "the cross-attention window has" in err
    assert "text_len 128" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "shot_000.safetensors").exists()


def test_malformed_scene_file_is_reported(tmp_path, ckpt, capsys):
    path = _scene(tmp_path, shots=[{"prompt": "x", "context": [0]}], mode="ar")
    rc = main(["scene", str(path), "--ckpt", ckpt, "--out", str(tmp_path / "o"), *TOOLS])
    assert rc == 2
    err = capsys.readouterr().err
    assert "scene.yaml" in err
    assert "shots[0].context [0] must name earlier shots" in err


def test_pool_commands_report_their_errors(tmp_path, ckpt, capsys):
    assert main(["accept", "--pool", str(tmp_path / "none")]) == 2
    assert "is not a history pool" in capsys.readouterr().err
    pool = ["--pool", str(tmp_path / "p")]
    main(["init", *pool, "--ckpt", ckpt, "--size", "2,16,16", *TOOLS])
    assert main(["shot", *pool, "--prompt", "x", "--context", "0", "--no-progress"]) == 2
    assert "indices [0] are not in the pool" in capsys.readouterr().err
    assert main(["shot", *pool, "--prompt", "x", "--mode", "ar-kv", "--no-progress"]) == 2
    assert "needs a context-causal model" in capsys.readouterr().err


def _scene_in(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    return str(_scene(folder, **changes))


def test_several_scene_files_share_one_model_and_one_manifest(tmp_path, ckpt):
    from lct_train.eval.scenes import read_eval_manifest

    files = [_scene_in(tmp_path / "a", key="synth-000004", seed=1),
             _scene_in(tmp_path / "b", seed=5)]  # no key: the folder is the file's name
    out = tmp_path / "out"
    assert main(["scene", *files, "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 0
    scenes = read_eval_manifest(out / "manifest.jsonl")
    assert [s.key for s in scenes] == ["synth-000004", "scene"]
    for scene, folder in zip(scenes, ("synth-000004", "scene")):
        assert [shot.path for shot in scene.shots] == [
            out / folder / f"shot_{i:03d}.mp4" for i in range(3)]
        assert all(shot.path.is_file() for shot in scene.shots)
    # the same latents as the scene generated on its own
    alone = tmp_path / "alone"
    assert main(["scene", files[1], "--ckpt", ckpt, "--out", str(alone), *TOOLS]) == 0
    for i in range(3):
        together = load_file(str(out / "scene" / f"shot_{i:03d}.safetensors"))["latent"]
        assert torch.equal(together, load_file(str(alone / f"shot_{i:03d}.safetensors"))["latent"])


@pytest.mark.parametrize(("second", "message"), [
    (dict(key="synth-000004"), "two scene files name the output folder 'synth-000004'"),
    (dict(key="synth-000009", mode="sideways"), "mode"),
    (dict(key=".."), "key must be a scene name"),
    # checked against the loaded model before the first scene is generated
    (dict(key="synth-000009", mode="ar-kv"), "mode 'ar-kv' needs a context-causal model"),
])
def test_several_scene_files_are_all_checked_before_any_is_written(tmp_path, ckpt, capsys,
                                                                   second, message):
    files = [_scene_in(tmp_path / "a", key="synth-000004"), _scene_in(tmp_path / "b", **second)]
    out = tmp_path / "out"
    assert main(["scene", *files, "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lct-sample scene: error: ")
    assert message in last
    assert not out.exists()


def test_a_later_scene_file_with_broken_media_writes_nothing(tmp_path, ckpt, capsys):
    files = [_scene_in(tmp_path / "a", key="synth-000004"), _scene_in(tmp_path / "b", key="x")]
    (tmp_path / "b" / "character.png").write_bytes(b"not an image")  # b's condition shot
    out = tmp_path / "out"
    assert main(["scene", *files, "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lct-sample scene: error: ")
    assert "character.png" in last
    assert not out.exists()


NOISE_SHAPE = [12, 2, 8, 8]  # SIZE through the pixel:2 codec


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        (None, "does not exist"),
        ({"noise": torch.zeros(12, 2, 8, 4)}, "shape [12, 2, 8, 4]"),
        ({"a": torch.zeros(NOISE_SHAPE), "b": torch.zeros(NOISE_SHAPE)}, "holds 2 tensors"),
        (b"not safetensors", "not a readable .safetensors file"),
    ],
)
def test_a_bad_noise_file_is_one_line_and_writes_nothing(tmp_path, ckpt, capsys, tensors,
                                                         problem):
    from safetensors.torch import save_file

    noise = tmp_path / "z.safetensors"
    if isinstance(tensors, bytes):
        noise.write_bytes(tensors)
    elif tensors is not None:
        save_file(tensors, str(noise))
    scene = _scene(tmp_path, shots=[{"prompt": "a", "noise": "z.safetensors"}])
    out = tmp_path / "out"
    assert main(["scene", str(scene), "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1]
    assert last.startswith("lct-sample scene: error: ")
    assert str(noise) in last
    assert problem in last
    assert f"latent shape [C, F, h, w] = {NOISE_SHAPE}" in last
    assert not out.exists()


def test_a_scene_and_a_pool_without_global_prompt(tmp_path, ckpt):
    """No global prompt: the pool records none (null), later shots run without a global group,
    and the same scene with an empty global prompt (a global group) differs."""
    scene = _scene(tmp_path, global_prompt=None, mode="ar", shots=[{"prompt": "a"}])
    out = tmp_path / "out"
    assert main(["scene", str(scene), "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 0
    assert json.loads((out / "pool.json").read_text())["global_prompt"] is None
    assert json.loads((out / "manifest.jsonl").read_text())["global_prompt"] is None
    assert main(["shot", "--pool", str(out), "--prompt", "b", "--no-progress"]) == 0
    assert HistoryPool.load(out).pending.context == (0,)
    empty = _scene(tmp_path, global_prompt="", mode="ar", shots=[{"prompt": "a"}])
    assert main(["scene", str(empty), "--ckpt", ckpt, "--out", str(tmp_path / "e"), *TOOLS]) == 0
    latents = [load_file(str(d / "shot_000.safetensors"))["latent"] for d in (out, tmp_path / "e")]
    assert (latents[0] - latents[1]).abs().max() > 1e-4


def test_a_guidance_embedded_model_without_a_value_is_refused_before_any_work(tmp_path, config,
                                                                             capsys):
    import dataclasses

    embedded = dataclasses.replace(config, guidance_embeds=True)
    ckpt = str(write_consolidated(tmp_path / "ckpt", embedded, tiny_model(embedded, torch.float32)))
    scene, out = _scene(tmp_path), tmp_path / "out"
    assert main(["scene", str(scene), "--ckpt", ckpt, "--out", str(out), *TOOLS]) == 2
    assert "neither the scene file, --embedded-guidance nor its preset" in capsys.readouterr().err
    assert not out.exists()
    assert main(["scene", str(scene), "--ckpt", ckpt, "--out", str(out), *TOOLS,
                 "--embedded-guidance", "6"]) == 0


def _lora_file(folder, config, modules, rank=2):
    """A diffusers LoRA file with random adapters on ``modules`` of the tiny model."""
    from lct_train.convert.lora_export import diffusers_lora_state, write_diffusers_lora

    model = tiny_model(config, torch.float32)
    gen = torch.Generator().manual_seed(0)
    adapters = {}
    for module in modules:
        weight = model.get_submodule(module).weight
        adapters[f"{module}.lora_A.weight"] = torch.randn(rank, weight.shape[1], generator=gen)
        adapters[f"{module}.lora_B.weight"] = torch.randn(weight.shape[0], rank, generator=gen)
    folder.mkdir()
    write_diffusers_lora(folder, *diffusers_lora_state(adapters, rank, 4.0))
    return str(folder)


def test_scene_with_a_lora_file(tmp_path, ckpt, config, capsys):
    """``--lora FILE --lora-scale S``: scale 0 is the checkpoint's sample, 1 another one; a
    file for layers the model lacks is one line."""
    lora = _lora_file(tmp_path / "lora", config, ["transformer_blocks.0.attn.to_q",
                                                  "single_transformer_blocks.0.proj_mlp"])
    latents = {}
    for name, extra in (("plain", []), ("zero", ["--lora", lora, "--lora-scale", "0"]),
                        ("one", ["--lora", lora])):
        out = tmp_path / name
        assert main(["scene", str(_scene(tmp_path)), "--ckpt", ckpt, "--out", str(out),
                     *TOOLS, *extra]) == 0
        latents[name] = load_file(str(out / "shot_001.safetensors"))["latent"]
    assert torch.equal(latents["zero"], latents["plain"])
    assert not torch.allclose(latents["one"], latents["plain"], atol=1e-3)
    bad = _lora_file(tmp_path / "bad", config, ["transformer_blocks.0.attn.to_q"])
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    from safetensors.torch import save_file

    tensors = load_file(f"{bad}/pytorch_lora_weights.safetensors")
    save_file({k.replace("blocks.0.", "blocks.7."): v for k, v in tensors.items()},
              str(renamed / "pytorch_lora_weights.safetensors"))
    capsys.readouterr()
    assert main(["scene", str(_scene(tmp_path)), "--ckpt", ckpt, "--out", str(tmp_path / "x"),
                 *TOOLS, "--lora", str(renamed)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"lct-sample scene: error: LoRA file {renamed}: adapts "
                    "transformer_blocks.7.attn.to_q, which the model does not have")
