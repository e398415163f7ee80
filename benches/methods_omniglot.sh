#!/usr/bin/env bash
# Omniglot 5-way and 20-way 1-shot of every learner after the same short CPU budget:
# `--minutes M` of 5-way 1-shot training (15 queries; the transfer baselines: classifier
# pre-training, batches of 128 images, Meta-Baseline half of it) on the background alphabets
# (rotated classes added, the default) on one torch thread, then 1,000 episodes of the
# evaluation alphabets 5-way (15 queries) and 20-way (5 queries). Reptile's classifier has
# a fixed number of outputs, so its 20-way column comes from a 20-way run of the same budget.
# Usage: METAROBUST_DATA=/path/to/data M=3 bash benches/methods_omniglot.sh [OUT_DIR] [LEARNER...]
# The last line of each eval log is JSON; benches/results/methods_omniglot.md holds a run.
set -euo pipefail
: "${METAROBUST_DATA:?set METAROBUST_DATA to the folder holding omniglot-py/}"
OUT=${1:-runs/methods-omniglot}
shift || true
LEARNERS=("$@")
[ ${#LEARNERS[@]} -gt 0 ] || LEARNERS=(protonet matching relation r2d2 metaoptnet protomaml
                                       reptile simpleshot baseline_pp meta_baseline tim)
M=${M:-3}
mkdir -p "$OUT"
train() {  # name learner ways queries extra...
  local name=$1 learner=$2 ways=$3 queries=$4
  shift 4
  [ -f "$OUT/$name/best.pt" ] || metarobust train --learner "$learner" --dataset omniglot \
    --ways "$ways" --shots 1 --queries "$queries" --minutes "$M" --threads 1 --seed 0 \
    "$@" --out "$OUT/$name" > "$OUT/train_$name.log" 2>&1
}
evaluate() {  # name ways queries
  metarobust eval "$OUT/$1" --ways "$2" --shots 1 --queries "$3" --episodes 1000 \
    > "$OUT/eval_$1_$2.log" 2>&1
}
for learner in "${LEARNERS[@]}"; do
  extra=()
  case $learner in
    protomaml) extra=(--meta-batch 4 --test-inner-steps 3) ;;
    reptile) extra=(--inner-steps 5 --inner-lr 0.1 --test-inner-steps 10) ;;
  esac
  train "$learner" "$learner" 5 15 "${extra[@]}"
  evaluate "$learner" 5 15
  if [ "$learner" = reptile ]; then
    train reptile20 reptile 20 5 "${extra[@]}"
    evaluate reptile20 20 5
  else
    evaluate "$learner" 20 5
  fi
done
tail -qn1 "$OUT"/eval_*.log
