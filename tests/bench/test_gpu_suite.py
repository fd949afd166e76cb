"""bench/gpu_suite.py --smoke: every stage runs on the CPU, so a broken stage is found before a
GPU is lent; the stage runner records overruns and goes on; what the suite imports is either on
the GPU image or carried as a wheel (bench/gpu_wheels.py)."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.testutils import REPO as ROOT

BENCH = ROOT / "bench"
SUITE = BENCH / "gpu_suite.py"
SMOKE_TIMEOUT_S = 900  # about 70 s of CPU; generous for a machine shared with other jobs

sys.path.insert(0, str(BENCH))
import gpu_stages  # noqa: E402
import gpu_train  # noqa: E402
import gpu_wheels  # noqa: E402


def run_suite(out: Path, *args: str, timeout: int = SMOKE_TIMEOUT_S):
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    report = out / "gpu_suite.json"
    return proc, json.loads(report.read_text()) if report.is_file() else None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    proc, report = run_suite(out)
    assert report is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, report, out


def _rows(report, stage, table):
    return report["stages"][stage]["tables"][table]


@pytest.mark.slow
def test_smoke_runs_every_stage(smoke):
    proc, report, out = smoke
    stages = report["stages"]
    assert set(stages) == set(gpu_stages.SMOKE.caps), stages.keys()
    failed = {n: (s["status"], s["notes"]) for n, s in stages.items() if s["status"] != "ok"}
    assert not failed, (failed, (out / "gpu_suite.log").read_text()[-4000:])
    assert proc.returncode == 0
    # 1: the gpu-marked tests are collected (and skipped without CUDA)
    counts = stages["tests"]["info"]["counts"]
    assert counts["skipped"] >= 6
    assert counts["failed"] == counts["error"] == 0
    # 2: both kernels, both masks, every n, finite times and TFLOP/s
    attention = _rows(report, "attention", "attention")
    assert {(r["kernel"], r["n"]) for r in attention} == {
        (k, n) for k, _ in gpu_stages.SMOKE.attn_kernels for n in gpu_stages.SMOKE.attn_shots}
    assert all(r["bidir_ms"] > 0 and r["causal_ms"] > 0 and math.isfinite(r["causal_tflops"])
               for r in attention)
    # 3: a row per shot count with throughput, MFU and memory, in both compile modes and LoRA
    for stage, shots in (("train-eager", gpu_stages.SMOKE.train_shots),
                         ("train-compiled", gpu_stages.SMOKE.compiled_shots),
                         ("train-lora", gpu_stages.SMOKE.train_shots[:1]),
                         ("train-wan", gpu_stages.SMOKE.train_shots[:1])):
        rows = _rows(report, stage, "train")
        assert [r["shots"] for r in rows] == list(shots)
        assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["peak_gb"] > 0 for r in rows)
        assert all(r["compile"] == (stage == "train-compiled") for r in rows)
        assert all((r["graphs"] > 0) == (stage == "train-compiled") for r in rows)
    # 4: KV cache and recompute give the same latents; the FLOP ratios are those of the n
    kv = _rows(report, "kv-cache", "kv-cache")
    assert [r["n"] for r in kv] == list(gpu_stages.SMOKE.kv_shots)
    assert all(r["max_abs_diff"] < 1e-4 and r["attn_ratio"] > 1 and r["speedup"] > 0 for r in kv)
    # 5: the step ran; syncs are counted on CUDA only, the CPU run says so
    assert _rows(report, "host-syncs", "host syncs") == [{"site": "n/a on CPU", "count": None}]
    # 6: lct-train and diffusers on the same weights agree (fp32) and both were timed
    vsd = _rows(report, "vs-diffusers", "vs-diffusers")
    assert [r["pass"] for r in vsd] == ["forward", "forward+backward"]
    assert all(r["max_rel_diff"] < 1e-5 and r["lct_ms"] > 0 and r["ratio"] > 0 for r in vsd)
    text = (out / "gpu_suite.md").read_text()
    assert "## Goals" in text
    assert "MFU >=" in text


@pytest.mark.slow
def test_smoke_imports_are_on_the_gpu_image_or_carried(smoke):
    _, report, _ = smoke
    imported = report["imported_modules"]
    assert "torch" in imported
    assert "hydra" in imported
    have = gpu_wheels.image_packages() | set(gpu_wheels.carried("3.12"))
    missing = gpu_wheels.distributions_of(imported) - have
    assert not missing, f"the GPU machine would lack {missing}: add them to bench/gpu_wheels.py"


@pytest.mark.slow
def test_stage_over_its_cap_is_recorded_and_the_suite_goes_on(tmp_path):
    proc, report = run_suite(tmp_path, "--stages", "tests", "kv-cache", "--cap", "tests=1")
    assert proc.returncode == 1
    assert report["stages"]["tests"]["status"] == "timeout (cap 1 s)"
    assert report["stages"]["tests"]["wall_s"] < 30  # stopped, not waited for
    assert report["stages"]["kv-cache"]["status"] == "ok"
    assert "| tests | timeout (cap 1 s) |" in (tmp_path / "gpu_suite.md").read_text()


def test_bad_cap_is_one_line_error(tmp_path):
    proc, report = run_suite(tmp_path, "--cap", "nosuch=3", timeout=120)
    assert proc.returncode == 2
    assert report is None
    assert proc.stderr.strip() == "gpu_suite: --cap: unknown stage(s) ['nosuch']"


def test_estimator_json_read(tmp_path, monkeypatch):
    (tmp_path / "est_probe.py").write_text(textwrap.dedent("""
        import json, sys
        print("peak per rank ...")
        print(json.dumps({"peak_bytes": 3 * 2**30, "fits": True, "argv": sys.argv[1:]}))
    """))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}")
    result = gpu_train.run_estimator(["model=tiny", "estimate.shots=2"], module="est_probe")
    assert result["peak_bytes"] == 3 * 2**30
    assert result["argv"] == ["model=tiny", "estimate.shots=2"]
    with pytest.raises(gpu_stages.StageFailure, match=r"exit 1: .*No module named no_such_estimator"):
        gpu_train.run_estimator([], module="no_such_estimator")


def test_junit_report_parsed(tmp_path):
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="tests.model.test_attention" name="a[x]" '
        'time="0.5"/><testcase classname="m" name="b" time="1"><failure message="assert 1 == 2'
        '&#10;more"/></testcase><testcase classname="m" name="c"><skipped message="needs a '
        'CUDA device"/></testcase></testsuite></testsuites>')
    assert gpu_stages.parse_junit(junit) == [
        {"test": "test_attention::a[x]", "outcome": "passed", "seconds": 0.5, "message": ""},
        {"test": "m::b", "outcome": "failed", "seconds": 1.0, "message": "assert 1 == 2"},
        {"test": "m::c", "outcome": "skipped", "seconds": 0.0, "message": "needs a CUDA device"},
    ]


def test_every_stage_has_a_cap_and_the_gpu_caps_fit_eight_minutes():
    from gpu_suite import BESIDE, STAGES

    for profile in (gpu_stages.GPU, gpu_stages.SMOKE):
        assert set(profile.caps) == set(STAGES)
    assert sum(c for n, c in gpu_stages.GPU.caps.items() if n != BESIDE) <= 8 * 60 - 20


def test_gpu_profile_configs_compose_and_scenes_are_the_stated_geometry(tmp_path):
    """What the GPU run composes is valid here, before a GPU is lent (a bad key costs a run)."""
    import dataclasses

    from lct_train.config.store import compose_config

    gpu = gpu_stages.GPU
    rec = gpu_stages.Recorder(tmp_path / "rows.jsonl")
    for compiled in (False, True):
        cfg = compose_config(gpu_train.train_overrides(rec, gpu, 6, compiled, tmp_path))
        assert cfg.model.num_dual_blocks == 20
        assert cfg.parallel.activation_checkpoint == "full"
        assert cfg.parallel.param_dtype == "bfloat16"
        assert cfg.parallel.compile is compiled
        assert cfg.parallel.compile_backend == "inductor"
    wan = compose_config([*gpu_train.train_overrides(rec, gpu, 3, False, tmp_path, gpu.wan_model)])
    assert (wan.model.family, wan.model.num_layers, wan.model.hidden_size) == ("wan", 30, 1536)
    wan_scene = gpu_train.scene(gpu, 9, wan.model.dummy_grid)
    assert wan_scene.num_tokens == 57_356 - 16  # the same shots, no dummy tokens
    syncs = gpu_train.train_overrides(rec, gpu, 2, False, tmp_path)
    assert compose_config([*syncs, f"model.num_dual_blocks={gpu.sync_layers}"]).model.num_dual_blocks == 2
    preset = gpu_stages.model_preset(gpu.model)
    tokens = [gpu_train.scene(gpu, n, preset.dummy_grid).num_tokens for n in gpu.train_shots]
    assert tokens == [57_356, 31_900, 6_444]
    kv = dataclasses.replace(preset, num_dual_blocks=gpu.kv_layers, num_single_blocks=0)
    assert kv.hidden_size == 2048
    assert sum(c for n, c in gpu.caps.items() if n != "estimate") == 460


def test_sync_warnings_are_counted_per_source_line():
    import warnings

    def step():
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step()
    sites = gpu_train.sync_sites(caught)
    assert len(sites) == 1
    ((site, count),) = sites.items()
    assert count == 2
    assert site.startswith("tests/bench/test_gpu_suite.py:")
    assert site.endswith('warnings.warn("called a synchronizing CUDA operation", UserWarning, '
                         "stacklevel=1)")
