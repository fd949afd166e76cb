#!/usr/bin/env bash
# The GPU side of bench/gpu_suite.py, for a lent device machine (no network, its own torch):
# installs the carried wheels (bench/gpu_wheels.py -> .whl/) into /tmp/lct-site without an
# index and without dependencies (the image's torch and everything else stay as they are),
# runs from the source tree (PYTHONPATH=src:.) and writes the report into $OUT.
#
#   bash bench/gpu_run.sh [gpu_suite.py arguments, e.g. --stages train-compiled]
#
# The device call (BENCHMARKS.md, "GPU suite"): command "bash bench/gpu_run.sh",
# carry [".whl"], timeout_s 500.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${LCT_WHEELS:-.whl}
SITE=${LCT_SITE:-/tmp/lct-site}
PY=${PYTHON:-python3}
if [ ! -f "$WHEELS/requirements.txt" ]; then
  echo "gpu_run: no $WHEELS/requirements.txt: run 'python bench/gpu_wheels.py' where pip works" \
       "and carry $WHEELS" >&2
  exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --find-links "$WHEELS" --target "$SITE" -r "$WHEELS/requirements.txt"
export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; print('gpu_run: python', sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.version.cuda, 'device',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
exec "$PY" bench/gpu_suite.py --out "${OUT:-gpu_suite_out}" "$@"
