"""Wheels of the Python packages the GPU suite imports that the lent GPU machine lacks.

That machine (``nvidia-h200``: Python 3.12, torch 2.11 + CUDA, no network) has the packages
listed in ``bench/gpu_image_packages.txt``. This helper imports the suite's modules in a fresh
interpreter (``SUITE_MODULES``), maps every third-party top-level module to its distribution,
adds their requirements (recursively, markers evaluated for the target Python), drops what the
image has, and downloads one wheel per remaining distribution, at the version installed here
(the one CI tests), for the target's Python and platform: ``pip download --no-deps
--only-binary=:all:``; a distribution published as an sdist only (antlr4-python3-runtime) is
built here with ``pip wheel`` and must come out pure Python. ``DEST/requirements.txt`` pins them.

    python bench/gpu_wheels.py [--dest .whl] [--python-version 3.12] [--list]

``bench/gpu_run.sh`` installs them there with ``pip install --no-index --no-deps``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
IMAGE_LIST = ROOT / "bench" / "gpu_image_packages.txt"
# What the suite's stages import (gpu_suite imports the stage modules; these are their lazy
# imports): tests/bench/test_gpu_suite.py checks that a smoke run imports nothing else.
SUITE_MODULES = ("gpu_suite", "attention_block", "kv_cache_sampling", "train_step", "vs_diffusers",
                 "diffusers",
                 "lct_train.train.trainer", "lct_train.sample.modes",
                 "lct_train.model.attention.flex", "lct_train.model.attention.varlen")
# Not imported by the suite but by training from shards (LoaderBatches): carried too, so that
# `lct-train` runs there on real shards; a few hundred kB.
ALSO_CARRY = ("webdataset",)
NOT_DISTRIBUTIONS = {"cython_runtime"}  # a module Cython extensions create at import
# Imported here only because they are installed, by optional imports of what the suite uses
# (accelerate's SageMaker config: boto3 and its requirements; transformers' kernels hub, both
# reached from diffusers): absent there, they are skipped, so the machine needs none of them.
OPTIONAL_MODULES = {"boto3", "botocore", "jmespath", "s3transfer", "kernels"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
PURE_TAG = "-py3-none-any.whl"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    lines = (ln.split("#")[0].strip() for ln in path.read_text().splitlines())
    return {canonical(ln) for ln in lines if ln}


def imported_modules(modules=SUITE_MODULES) -> list[str]:
    """Third-party top-level modules a fresh interpreter holds after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "from gpu_suite import third_party_modules\n"
            "print(json.dumps(third_party_modules()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "bench", check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def distributions_of(modules) -> set[str]:
    """Distributions providing ``modules`` (``ValueError`` naming a module none provides)."""
    owners = md.packages_distributions()
    dists = set()
    for module in modules:
        if module in NOT_DISTRIBUTIONS or module in OPTIONAL_MODULES:
            continue
        if module not in owners:
            raise ValueError(f"module {module!r} belongs to no installed distribution")
        dists.update(canonical(d) for d in owners[module])
    return dists


def with_requirements(dists, python_version: str) -> set[str]:
    """``dists`` and everything they require (no extras), for ``python_version`` on Linux."""
    env = {**default_environment(), "python_version": python_version,
           "python_full_version": f"{python_version}.0", "sys_platform": "linux",
           "platform_system": "Linux", "extra": ""}
    todo, seen = list(dists), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonical(req.name))
    return seen


def carried(python_version: str) -> dict[str, str]:
    """``{distribution: version installed here}`` of what the image lacks."""
    needed = distributions_of(imported_modules()) | {canonical(d) for d in ALSO_CARRY}
    missing = with_requirements(needed, python_version) - image_packages()
    return {name: md.version(name) for name in sorted(missing)}


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False)


def download(name: str, version: str, dest: Path, python_version: str) -> Path:
    """One wheel of ``name==version`` for the target into ``dest``; its path."""
    before = set(dest.glob("*.whl"))
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    proc = pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", *platforms, "-d", str(dest),
               f"{name}=={version}")
    if proc.returncode != 0:  # no wheel published: build one from the sdist, pure Python only
        proc = pip("wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}")
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(
        p for p in dest.glob("*.whl") if canonical(p.name.split("-")[0]) == name
        and p.name.split("-")[1] == version)
    if proc.returncode != 0 or not new:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"gpu_wheels: no wheel of {name}=={version}: {tail[0]}")
    wheel = new[0]
    if "-none-any" not in wheel.name and "manylinux" not in wheel.name:
        raise RuntimeError(f"gpu_wheels: {wheel.name} is built for this machine only")
    return wheel


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, default=ROOT / ".whl")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--list", action="store_true", help="print what would be carried, download nothing")
    args = p.parse_args()
    wanted = carried(args.python_version)
    for name, version in wanted.items():
        print(f"{name}=={version}")
    if args.list:
        return 0
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):  # one version of each: two stop the install there
        old.unlink()
    for name, version in wanted.items():
        wheel = download(name, version, args.dest, args.python_version)
        print(f"  {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
    (args.dest / "requirements.txt").write_text(
        "".join(f"{n}=={v}\n" for n, v in wanted.items()))
    total = sum(w.stat().st_size for w in args.dest.glob("*.whl")) / 2**20
    print(f"gpu_wheels: {len(wanted)} wheels, {total:.1f} MiB in {args.dest} "
          "(the device tool carries 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
