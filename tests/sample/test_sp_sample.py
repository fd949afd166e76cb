"""``lct-sample --sp 2`` under torchrun (2 gloo ranks, Ulysses sequence parallelism) gives the
latents of one process, for each family (the MMDiT cuts its joint text+video stream; Wan cuts
the video and keeps the text whole on every rank), in the ar-kv mode (KV cache sharded by heads;
a scene without global prompt, so the first shot starts from an empty cache) and the joint mode
(with one); both scene files in one launch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lct_train.sample.cli import main
from tests.sample.tiny import tiny_model, tiny_wan_model, write_consolidated
from tests.train.torchrun import LAUNCH_TIMEOUT_S, env

pytestmark = pytest.mark.slow
TOOLS = ["--codec", "pixel:2", "--text-encoder", "tiny", "--no-progress", "--mask", "causal"]
SHOTS = 3
MODES = ("ar-kv", "joint")


def _scene(tmp_path, mode: str):
    size = {"frames": 2, "height": 12, "width": 16}  # 2 x 3 x 4 patches: odd joint lengths
    scene = {"mode": mode, "steps": 2, "guidance": 2.0, "t_c": 0.3, "seed": 7, "size": size,
             "shots": [{"prompt": f"Character 1, shot {i}."} for i in range(SHOTS)]}
    if mode == "joint":
        scene["global_prompt"] = "Character 1: a red fox."
    path = tmp_path / f"{mode}.yaml"
    path.write_text(json.dumps(scene))
    return path


def _latents(out) -> list[torch.Tensor]:
    return [load_file(str(out / f"shot_{i:03d}.safetensors"))["latent"] for i in range(SHOTS)]


def _checkpoint(tmp_path, request, family: str) -> str:
    if family == "wan":
        config = request.getfixturevalue("wan_config")
        model = tiny_wan_model(config, torch.float32)
    else:
        config = request.getfixturevalue("config")
        model = tiny_model(config, torch.float32)
    return str(write_consolidated(tmp_path / "ckpt", config, model))


@pytest.mark.parametrize("family", ["mmdit", "wan"])
def test_sp2_sampling_equals_one_process(tmp_path, request, family):
    ckpt = _checkpoint(tmp_path, request, family)
    scenes = [str(_scene(tmp_path, mode)) for mode in MODES]
    one, two = tmp_path / "sp1", tmp_path / "sp2"
    assert main(["scene", *scenes, "--ckpt", ckpt, "--out", str(one), *TOOLS]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lct_train.sample.cli", "scene", *scenes, "--ckpt", ckpt, "--out", str(two),
           "--sp", "2", *TOOLS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
                          env=env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("wrote 3 shots") == len(MODES)  # rank 0 writes
    for mode in MODES:
        for want, got in zip(_latents(one / mode), _latents(two / mode)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sp_must_divide_the_heads(tmp_path, config, capsys):
    ckpt = str(write_consolidated(tmp_path / "ckpt", config, tiny_model(config, torch.float32)))
    rc = main(["scene", str(_scene(tmp_path, "joint")), "--ckpt", ckpt, "--out",
               str(tmp_path / "out"), "--sp", "3", *TOOLS])
    assert rc == 2
    assert "--sp 3 does not divide the model's 2 attention heads" in capsys.readouterr().err
