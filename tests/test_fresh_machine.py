"""Fresh-machine paths (issue 11, item 7): a non-editable install ships and finds the configs,
``make test`` installs first on a fresh clone, the README says what a resume at another world
size needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("src", "data_tools", "conf", "setup.py", "setup.cfg", "pyproject.toml",
                "README.md", "MANIFEST.in")


def conf_files() -> list[str]:
    return sorted(str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the checkout itself stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in (n for n in BUILD_INPUTS if (REPO / n).exists()):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
            REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    return next(out.glob("lct_train-*.whl"))


@pytest.mark.slow
def test_the_wheel_ships_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert conf_files()
    missing = [f for f in conf_files() if f"lct_train/conf/{f}" not in names]
    assert not missing


@pytest.mark.slow
def test_a_non_editable_install_finds_its_configs(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("from lct_train.config.store import compose_config, find_conf_dir; "
            "print(find_conf_dir()); print(compose_config(['model=tiny']).model.num_dual_blocks)")
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("LCT_CONF_DIR", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    conf_dir, blocks = proc.stdout.split()
    assert Path(conf_dir) == site / "lct_train" / "conf"
    assert int(blocks) == 2  # conf/model/tiny.yaml, read from the installed package


def test_make_test_installs_first_on_a_fresh_clone(tmp_path):
    for name in ("Makefile", "setup.py", "setup.cfg", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    plan = subprocess.run(["make", "-n", "test"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "pip install -e" in plan  # no install stamp yet: install, then lint and test
    assert plan.index("pip install -e") < plan.index("ruff check") < plan.index("-m pytest")
    (tmp_path / ".installed").touch()
    plan = subprocess.run(["make", "-n", "test"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "pip install" not in plan  # installed since the package files last changed
    assert "-m pytest" in plan


def test_readme_says_what_a_resume_at_another_world_size_needs():
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "another world size" in readme
    for setting in ("checkpoint.skip_loader_state_on_world_change=true",
                    "data.resume_policy=reshuffle"):
        assert setting in readme
