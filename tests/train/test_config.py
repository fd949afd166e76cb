"""Config composition, presets, validation and the one-line error of a bad key."""

import subprocess
import sys

import pytest

from lct_train.config.store import compose_config, one_line_error


@pytest.mark.parametrize(("stage", "mask", "init"), [("lct", "bidirectional", "scratch"),
                                                     ("causal_ft", "causal", "auto")])
def test_stages_compose(stage, mask, init):
    cfg = compose_config([f"stage={stage}", "model=tiny"])
    assert cfg.stage.name == stage
    assert cfg.stage.mask == mask
    assert cfg.stage.init_from == init
    assert cfg.run_dir == f"outputs/{stage}"
    assert cfg.data.patch_size == cfg.model.patch_size  # geometry follows the model
    assert cfg.data.dummy_grid == cfg.model.dummy_grid


@pytest.mark.parametrize("preset", ["lct-3b", "hunyuan-video"])
@pytest.mark.parametrize(("memory", "tokens"), [("80gb", 65536), ("141gb", 131072)])
def test_memory_presets(preset, memory, tokens):
    cfg = compose_config([f"model={preset}", f"memory={memory}"])
    assert cfg.data.max_tokens == tokens
    assert cfg.parallel.activation_checkpoint == "full"
    # an explicit override still wins over the preset
    cfg = compose_config([f"model={preset}", f"memory={memory}", "data.max_tokens=8192"])
    assert cfg.data.max_tokens == 8192


@pytest.mark.parametrize(("override", "key"), [
    ("optim.lrr=1", "optim.lrr"),
    ("+optim.zz=1", "optim.zz"),
    ("model.depthh=3", "model.depthh"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.schedule=linear", "optim.schedule"),
    ("parallel.activation_checkpoint=some", "parallel.activation_checkpoint"),
    ("parallel.compile_backend=tvm", "parallel.compile_backend"),
    ("data.p_image=2", "data.p_image"),
    ("model.num_heads=oops", "model.num_heads"),
    ("model.head_dim=30", "model.rope_axes_dim"),
    # refused at composition, before any model is built or anything is written
    ("stage.mask=isolated model.attn_backend=flash-varlen", "model.attn_backend"),
])
def test_errors_name_the_key(override, key):
    with pytest.raises(Exception) as info:
        compose_config(["model=tiny", *override.split()])
    message = one_line_error(info.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_cli_bad_key_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "lct_train.train.main", "optim.lrr=1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "optim.lrr" in lines[0]


@pytest.mark.parametrize(
    ("overrides", "shift", "guidance"),
    [
        (["model=hunyuan-video"], 7.0, 1.0),  # the preset's sampling shift; guidance 1
        (["model=hunyuan-video", "loss.timestep_shift=3.0", "loss.guidance=2.0"], 3.0, 2.0),
        (["model=tiny"], 1.0, None),  # no preset shift, no guidance embedding
    ],
)
def test_training_timestep_shift_and_embedded_guidance(overrides, shift, guidance):
    """The recipe of a guidance-distilled model (docs/method.md): t shifted as the preset
    samples, embedded guidance 1 (the conditional velocity is the target)."""
    from types import SimpleNamespace

    import torch

    from lct_train.train.step import StepInputs

    cfg = compose_config([*overrides, "run_dir=/tmp/unused"])
    world = SimpleNamespace(dp_rank=0, dp_size=1, sp=None)
    inputs = StepInputs.from_config(cfg, cfg.model, world, torch.device("cpu"))
    assert inputs.t_shift == shift
    assert inputs.guidance == guidance


def test_model_sampling_block_is_checked():
    with pytest.raises(Exception, match=r"model\.sampling\.shift: must be > 0"):
        compose_config(["model=tiny", "model.sampling.shift=0", "run_dir=/tmp/unused"])
    with pytest.raises(Exception, match=r"model\.sampling"):
        compose_config(["model=tiny", "+model.sampling.cfg=2", "run_dir=/tmp/unused"])
