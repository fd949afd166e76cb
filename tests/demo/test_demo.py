"""`make demo` wiring: the whole pipeline (synth -> shards -> stage 1 -> causal FT -> KV-cache
sampling) on a few scenes and steps, through the real command lines."""

import subprocess
import sys

import pytest
from PIL import Image

from lct_train.sample.writers import THUMB_HEIGHT

DEMO_TIMEOUT_S = 600


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "lct_train.demo", "--out", str(out), "--scenes", "4",
           "--stage1-steps", "2", "--causal-steps", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sample = out / "sample"
    for name in ("scene.mp4", "contact_sheet.png", "shot_000.mp4", "shot_002.safetensors"):
        assert (sample / name).is_file(), name
    with Image.open(sample / "contact_sheet.png") as sheet:
        assert sheet.height >= 3 * THUMB_HEIGHT  # one row per generated shot
    # stage 2 started from stage 1's checkpoint and both stages left a final checkpoint
    assert list((out / "runs" / "stage1" / "checkpoints").glob("step-00000002"))
    assert list((out / "runs" / "causal_ft" / "checkpoints").glob("step-00000002"))
    assert "consistency with the scene's ground truth" in result.stdout
    assert str(sample / "contact_sheet.png") in result.stdout

    # Re-running resumes: finished shards are skipped and training has nothing left to do.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
