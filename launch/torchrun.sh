#!/usr/bin/env bash
# Launch lct-train on one node or many (torchrun, c10d rendezvous). Every argument after the
# script name is a Hydra override passed to the trainer.
#
#   single node, all GPUs:   launch/torchrun.sh stage=lct model=lct-3b memory=80gb
#   multi-node (run on every node with the same RDZV_ENDPOINT / RDZV_ID):
#     NNODES=4 RDZV_ENDPOINT=node0:29500 RDZV_ID=lct-42 launch/torchrun.sh stage=lct ...
#   CPU (gloo):              NPROC=2 launch/torchrun.sh model=tiny parallel=cpu ...
#
# Environment: NNODES (default 1), NPROC (GPUs per node; default: all visible GPUs, else 1),
# RDZV_ENDPOINT (host:port of the rendezvous; default: standalone single node), RDZV_ID,
# PYTHON (default python3).
set -euo pipefail

PYTHON=${PYTHON:-python3}
NNODES=${NNODES:-1}
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$("$PYTHON" -c "import torch; print(max(1, torch.cuda.device_count()))")
fi

if [[ -n "${RDZV_ENDPOINT:-}" ]]; then
  RDZV=(--rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-lct-train}")
elif [[ "$NNODES" == "1" ]]; then
  RDZV=(--standalone)
else
  echo "launch/torchrun.sh: NNODES=$NNODES needs RDZV_ENDPOINT=host:port" >&2
  exit 2
fi

exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc_per_node="$NPROC" \
  "${RDZV[@]}" -m lct_train.train.main "$@"
