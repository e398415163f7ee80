#!/usr/bin/env bash
# Certified accuracy of a plain and a noise-trained ProtoNet on Omniglot: 5 minutes of
# 20-way 1-shot training each (the second with --noise-train 0.25), then randomized-smoothing
# certification on 20 episodes of 5-way 1-shot with 5 queries per class of the evaluation
# alphabets (sigma 0.25, 500 samples, alpha 0.001), and the base classifiers' accuracy.
# Needs METAROBUST_DATA (the folder holding omniglot-py/). Writes into OUT (default
# runs/certify_omniglot).
set -euo pipefail
OUT=${OUT:-runs/certify_omniglot}
mkdir -p "$OUT"
for kind in plain noise; do
  extra=(); [ "$kind" = noise ] && extra=(--noise-train 0.25)
  metarobust train --learner protonet --dataset omniglot --ways 20 --shots 1 --queries 5 \
    --minutes 5 --seed 0 "${extra[@]}" --out "$OUT/$kind"
  metarobust certify "$OUT/$kind" --ways 5 --shots 1 --queries 5 --episodes 20 --samples 500 \
    --n0 50 --sigma 0.25 --radii 0,0.25,0.5,1.0 --device cpu --out "$OUT/certify_$kind"
  metarobust eval "$OUT/$kind" --ways 5 --shots 1 --episodes 200 --device cpu
done
