#!/usr/bin/env bash
# Data-parallel training under torchrun: the same `metarobust train` command, launched once
# per process. --meta-batch stays the global number of tasks per step (a multiple of the
# process count); process 0 writes the log and checkpoints.
#
#   bash examples/multi_gpu.sh                       # NPROC GPUs of this machine
#   NPROC=2 DEVICE=cpu STEPS=4 bash examples/multi_gpu.sh   # two CPU processes (gloo)
#
# Across machines, run on every machine (NODE_RANK 0 on the first, 1 on the second, ...),
# with HOST the address of the first:
#
#   torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 --rdzv_backend=c10d \
#       --rdzv_endpoint=HOST:29400 --rdzv_id=maml1 -m metarobust train \
#       --config configs/omniglot_maml_5w1s.toml --data-root DATA --out runs/maml
#
# Nodes need no shared file system: on resume, process 0 sends the checkpoint to the others.
set -euo pipefail
NPROC=${NPROC:-4}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-2000}
OUT=${OUT:-runs/multi-gpu}

torchrun --standalone --nproc_per_node="$NPROC" -m metarobust train \
    --learner protonet --dataset glyphs --ways 5 --shots 1 --queries 5 \
    --meta-batch "$NPROC" --steps "$STEPS" --device "$DEVICE" --out "$OUT"
