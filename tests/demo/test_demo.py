"""`make demo` wiring: the whole pipeline (synth -> shards -> stage 1 -> causal FT -> KV-cache
sampling) on a few scenes and steps, through the real command lines."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from lct_train.sample.writers import THUMB_HEIGHT

DEMO_TIMEOUT_S = 600
STEP_LINE = re.compile(r"^step \d+/\d+ ", re.MULTILINE)  # the trainer's console step line


def _build_summary(stdout: str) -> dict:
    """The JSON summary line `lct-shards build` prints."""
    lines = [line for line in stdout.splitlines() if line.startswith('{"rank"')]
    assert len(lines) == 1, stdout[-3000:]
    return json.loads(lines[0])


def _demo(out, *extra: str) -> tuple[list[str], subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "data_tools.demo", "--out", str(out), "--scenes", "4",
           "--stage1-steps", "2", "--causal-steps", "2", *extra]
    return cmd, subprocess.run(cmd, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)


def _check_first_run(out, result) -> tuple:
    """What one demo run leaves and prints; returns (stage-1, causal checkpoints, build summary)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    sample = out / "sample"
    scene_files = sorted((out / "scenes").glob("*.yaml"))
    assert scene_files
    keys = [f.stem for f in scene_files]
    for mode in ("joint", "ar-kv"):
        rows = [json.loads(line) for line in (sample / mode / "manifest.jsonl").open()]
        assert sorted(row["key"] for row in rows) == keys  # one lct-eval manifest per sampling
        for path in scene_files:
            shots = len(yaml.safe_load(path.read_text())["shots"])
            assert shots >= 2
            for name in ("scene.mp4", "contact_sheet.png", "shot_000.mp4",
                         f"shot_{shots - 1:03d}.safetensors"):
                assert (sample / mode / path.stem / name).is_file(), (mode, name)
    with Image.open(sample / "contact_sheet.png") as sheet:  # a row per scene, 3 tiles wide
        assert sheet.height >= len(keys) * 2 * THUMB_HEIGHT
        assert sheet.width >= 3 * THUMB_HEIGHT
    # both stages left a final checkpoint; causal FT started from stage 1's
    stage1 = out / "runs" / "stage1" / "checkpoints" / "step-00000002"
    causal = out / "runs" / "causal_ft" / "checkpoints" / "step-00000002"
    assert stage1.is_dir()
    assert causal.is_dir()
    assert "stage causal_ft (causal)" in log
    assert f"weights: checkpoint {stage1} (" in log
    assert len(STEP_LINE.findall(result.stderr)) >= 2
    scores = re.findall(r"^  (stage 1, joint|causal FT, ar-kv) +(\d\.\d\d|n/a) ", result.stdout,
                        re.MULTILINE)  # lct-eval of each sampling
    assert [title for title, _ in scores] == ["stage 1, joint", "causal FT, ar-kv"], result.stdout
    assert "the baseline without cross-shot attention" in result.stdout
    assert "(no colour is named)" in result.stdout
    assert str(sample / "contact_sheet.png") in result.stdout
    first_build = _build_summary(result.stdout)
    assert first_build["scenes_built"] == 4
    assert first_build["skipped_done"] == 0
    return stage1, causal, first_build


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = (tmp_path / "demo").resolve()
    cmd, result = _demo(out)
    stage1, causal, first_build = _check_first_run(out, result)
    stamps = {f: f.stat().st_mtime_ns for ckpt in (stage1, causal)
              for f in ckpt.rglob("*") if f.is_file()}
    sampled = {f: f.stat().st_mtime_ns for f in (out / "sample").glob("*/**/*") if f.is_file()}

    # Re-running resumes: finished shards are skipped, training has nothing left to do and
    # the samplings of those checkpoints are kept.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = again.stdout + again.stderr
    build = _build_summary(again.stdout)
    assert build["scenes_built"] == 0
    assert build["skipped_done"] == first_build["chunks"]
    assert "=== synthetic scenes" not in again.stdout  # the rendered scenes are kept
    assert f"resumed from {stage1} at step 2" in log
    assert f"resumed from {causal} at step 2" in log
    assert not STEP_LINE.findall(again.stderr)  # no training step ran
    assert "lct-train: saved" not in log
    for ckpt in (stage1, causal):
        assert [p.name for p in ckpt.parent.glob("step-*")] == [ckpt.name]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # checkpoints untouched
    for ckpt in (stage1, causal):
        assert f"kept, already sampled from {ckpt} (" in again.stdout
    assert {f: f.stat().st_mtime_ns for f in sampled} == sampled  # sample/<mode>/ untouched


@pytest.mark.slow
def test_wan_demo_end_to_end(tmp_path):
    """``--family wan``: the same pipeline on the Wan-family model (conf/experiment/demo_wan.yaml)."""
    out = (tmp_path / "demo").resolve()
    _, result = _demo(out, "--family", "wan")
    _check_first_run(out, result)
    assert "experiment=demo_wan" in result.stdout
    meta = json.loads((out / "runs" / "stage1" / "checkpoints" / "step-00000002" /
                       "lct_meta.json").read_text())
    assert meta["config"]["model"]["family"] == "wan"
