#!/usr/bin/env bash
# The CPU result targets of the learners issue, as the README states them, run one after the
# other on an otherwise idle machine (they are wall-clock budgets):
#   1. ProtoNet time-to-accuracy: 10 minutes of 20-way 1-shot training on Omniglot
#      background, then 5-way 1-shot on evaluation (600 episodes); target >= 98.0%.
#   2. Sinusoid MAML: 5 minutes, then MSE after 1/5/10 steps; target <= 0.67/0.38/0.35.
#   3. MAML meta-training throughput: `metarobust bench maml` (second order, default path
#      against the learn2learn-style reference; target >= 1.3x on the CPU).
# Usage: METAROBUST_DATA=/path/to/data bash benches/cpu_targets.sh [OUT_DIR]
# Each step prints its result; the last lines of each eval are JSON.
set -euo pipefail
DATA=${METAROBUST_DATA:?set METAROBUST_DATA to the folder holding omniglot-py/}
OUT=${1:-runs/cpu-targets}
mkdir -p "$OUT"
only=${CPU_TARGETS:-protonet sinusoid maml}

if [[ " $only " == *" protonet "* ]]; then
  rm -rf "$OUT/protonet"
  metarobust train --learner protonet --dataset omniglot --data-root "$DATA" \
      --split background --ways 20 --shots 1 --queries 5 --minutes 10 --device cpu \
      --out "$OUT/protonet" | tail -n 1
  metarobust eval "$OUT/protonet" --dataset omniglot --data-root "$DATA" --split evaluation \
      --ways 5 --shots 1 --queries 15 --episodes 600 | tail -n 2
fi

if [[ " $only " == *" sinusoid "* ]]; then
  rm -rf "$OUT/sinusoid"
  metarobust train --learner maml --dataset sinusoid --shots 5 --queries 10 --meta-batch 25 \
      --inner-steps 1 --inner-lr 0.01 --minutes 5 --device cpu --out "$OUT/sinusoid" \
      | tail -n 1
  metarobust eval "$OUT/sinusoid" --shots 5 --episodes 600 | tail -n 2
fi

if [[ " $only " == *" maml "* ]]; then
  metarobust bench maml --data-root "$DATA"
fi
