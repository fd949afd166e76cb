"""Issue 11 item 4: bad input to a run is one line naming the key or path (exit 2) and writes
nothing; a run stopped by bad data under torchrun ends with the project's line, not tracebacks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lct_train.data.schema import DATASET_FILE
from tests.data.test_bad_data import missing_text, rewrite
from tests.testutils import one_line
from tests.train.test_kill_resume import DATA_GEOMETRY, build_dataset
from tests.train.torchrun import LAUNCH_TIMEOUT_S, env, torchrun_cmd


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(tmp_path_factory)


@pytest.fixture
def sources(tmp_path):
    empty = tmp_path / "empty"  # a folder, but no dataset
    empty.mkdir()
    no_shards = tmp_path / "no_shards"  # a dataset.json, but no shards
    (no_shards / "shards").mkdir(parents=True)
    (no_shards / DATASET_FILE).write_text(
        '{"vae": {}, "text_encoder": {}, "latent_channels": 12, "text_dim": 32, '
        '"pooled_dim": 16, "temporal_factor": 1, "spatial_factor": 2, "image_frame": "any", '
        '"fps": 8.0, "area": 1024, "format_version": 1}')
    return {"missing": tmp_path / "missing", "empty": empty, "no_shards": no_shards}


@pytest.mark.parametrize(("case", "key", "text"), [
    ("missing", "data.sources[1].path", "is not a directory"),
    ("empty", "data.sources[1].path", "not a dataset directory"),
    ("no_shards", "data.sources[1].path", "holds no shards"),
])
def test_bad_data_paths_name_the_source(train, tmp_path, sources, dataset, case, key, text):
    run = tmp_path / "run"
    status, err = train(f"run_dir={run}", "data_source=shards", *DATA_GEOMETRY,
                        f"data.sources=[{{path: {dataset}}}, {{path: {sources[case]}}}]")
    assert status == 2
    line = one_line(err)
    assert line.startswith(f"lct-train: config error: {key}: {sources[case]}"), line
    assert text in line
    assert not run.exists()


@pytest.mark.parametrize(("override", "line"), [
    ("model.text_dim=48", "model.text_dim: is 48 but the data (DATA) has 32"),
    ("model.latent_channels=16", "model.latent_channels: is 16 but the data (DATA) has 12"),
])
def test_a_shard_set_of_other_encoders_is_one_line_naming_both_sides(train, tmp_path, dataset,
                                                                     override, line):
    """Issue 19: the training start against an incompatible set stays one line (the build side
    refuses earlier with lct-shards build --model: tests/data/test_hunyuan_pipeline.py)."""
    run = tmp_path / "run"
    status, err = train(f"run_dir={run}", "data_source=shards", *DATA_GEOMETRY, override,
                        f"data.sources=[{{path: {dataset}}}]", "data.num_workers=0")
    assert status == 2
    assert one_line(err) == f"lct-train: config error: {line.replace('DATA', str(dataset))}"
    assert not run.exists()


@pytest.mark.parametrize(("overrides", "start"), [
    (["resume=/nowhere/step-00000010"], "resume: /nowhere/step-00000010 is not a training "
                                        "checkpoint"),
    (["data.sources=[{path: a}, {pth: b}]"], "data.sources[1].pth: Key 'pth' not in"),
    (["run_dir=FILE/run"], "run_dir: cannot create FILE/run: FILE is not a directory"),
])
def test_bad_settings_are_one_line_naming_the_key(train, tmp_path, overrides, start):
    file = tmp_path / "a-file"
    file.write_text("")
    overrides = [o.replace("FILE", str(file)) for o in overrides]
    if not any(o.startswith("run_dir=") for o in overrides):
        overrides.append(f"run_dir={tmp_path / 'run'}")
    status, err = train(*overrides)
    assert status == 2
    assert one_line(err).startswith(f"lct-train: config error: {start.replace('FILE', str(file))}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.slow
def test_bad_sample_fraction_under_torchrun_ends_with_the_project_line(dataset, tmp_path):
    bad = tmp_path / "bad"
    subprocess.run(["cp", "-r", str(dataset), str(bad)], check=True)
    for shard in sorted((bad / "shards").glob("*.tar")):
        rewrite(shard, missing_text)  # every sample bad: both ranks stop at their first check
    started = time.monotonic()
    proc = subprocess.run(
        torchrun_cmd(2, [*DATA_GEOMETRY, f"data.sources=[{{path: {bad}}}]", "data.num_workers=1",
                         "data.max_tokens=512", "data.bad_check_min_samples=2", "steps=4",
                         f"run_dir={tmp_path / 'run'}"]),
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env())
    assert time.monotonic() - started < LAUNCH_TIMEOUT_S
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    ours = [ln for ln in out.splitlines() if ln.startswith("lct-train: rank")]
    assert ours, out
    assert all("data error: " in ln and "max_bad_fraction" in ln and "missing members" in ln
               for ln in ours)
    # no worker traceback (DataLoader re-raise, gloo): only torchrun's own report follows
    assert "Caught DataQualityError" not in out
    assert "lct_train/" not in out.split("ChildFailedError")[0], out
    last = [ln for ln in out.splitlines() if ln.strip() and set(ln.strip()) != {"="}][-1]
    assert "lct-train: rank" in last, out[-3000:]
    assert "data error: " in last


@pytest.mark.slow
def test_a_config_error_under_torchrun_is_the_root_cause(tmp_path):
    """sp_degree=3 on 2 ranks: the project's line once, and torchrun's report names it as the
    root cause (each rank recorded it) instead of "To enable traceback see ..."."""
    proc = subprocess.run(torchrun_cmd(2, ["parallel.sp_degree=3", f"run_dir={tmp_path / 'run'}",
                                           "data_source=synthetic"]),
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    ours = [ln for ln in out.splitlines() if ln.startswith("lct-train: config error: ")]
    assert len(ours) == 1, out
    assert "parallel.sp_degree" in ours[0]
    root_cause = out.split("Root Cause")[1]
    assert ours[0] in root_cause, out
    assert "To enable traceback" not in out
    assert "lct_train/" not in out, out  # no traceback of ours (torchrun prints its own)
    assert not (tmp_path / "run").exists()


def test_a_rank_that_lost_its_peer_says_so_in_one_line(train, tmp_path, monkeypatch):
    """What gloo raises in a collective whose peer stopped becomes one line recorded one second
    after the peer's own line, so that torchrun's root cause stays the peer's."""
    import json

    from lct_train.train.trainer import Trainer

    def lose_the_peer(self):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                           "[127.0.0.1]:9136. This is typically caused by a remote worker crashing.")

    monkeypatch.setattr(Trainer, "train", lose_the_peer)
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    started = time.time()
    status, err = train(f"run_dir={tmp_path / 'run'}")
    assert status == 2
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after the start-up line
    assert line == ("lct-train: rank 0: stopped: another rank stopped first (its line above "
                    "says why)")
    record = json.loads(error_file.read_text())["message"]
    assert record["message"] == line
    assert int(record["extraInfo"]["timestamp"]) >= int(started) + 1


def test_a_run_dir_under_an_unsearchable_directory_is_one_line(train, tmp_path, monkeypatch):
    """``locked/run`` where ``locked`` cannot be searched (as a non-root user meets it; the
    tests run as root, so the refusal of the file system is simulated)."""
    from pathlib import Path

    locked = tmp_path / "locked"
    exists = Path.exists

    def refusing_exists(self, *args, **kwargs):
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", refusing_exists)
    status, err = train(f"run_dir={locked / 'run'}")
    assert status == 2
    assert one_line(err) == (f"lct-train: config error: run_dir: cannot look for {locked / 'run'}"
                             f": permission denied in {locked}")


@pytest.mark.parametrize(("body", "status", "says"), [
    ("print('written'); return 3", 3, "written"),  # main's status, its output flushed
    ("raise RuntimeError('a bug')", 1, "RuntimeError: a bug"),  # a traceback, status 1
])
def test_a_console_script_ends_through_end_process(tmp_path, body, status, says):
    """`run_then_end` (the body of `lct-train` / `lct-sample`): main's status, or a bug's
    traceback and 1, then exit without the interpreter's finalisation; exit handlers still run."""
    script = tmp_path / "cli.py"
    script.write_text(
        "import atexit\n"
        "from lct_train.parallel.dist import run_then_end\n"
        f"atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').close())\n"
        f"def main():\n    {body}\n"
        "run_then_end(main)\n")
    # buffered output (a pipe, PYTHONUNBUFFERED unset): what main printed must be flushed
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env() | {"PYTHONUNBUFFERED": ""})
    assert proc.returncode == status, proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    assert (tmp_path / "atexit").is_file()
