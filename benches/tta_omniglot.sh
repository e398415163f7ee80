#!/usr/bin/env bash
# Test-time adaptation of a ProtoNet on Omniglot: 3 minutes of 20-way 1-shot training, then
# accuracy on clean episodes, under each corruption at severity 3 and on the domain-shift
# targets, with none / bn / tent on the same 5-way 1-shot episodes (benches/tta_omniglot.py).
# Needs METAROBUST_DATA (the folder holding omniglot-py/). Writes into OUT (default
# runs/tta_omniglot).
set -euo pipefail
OUT=${OUT:-runs/tta_omniglot}
mkdir -p "$OUT"
metarobust train --learner protonet --dataset omniglot --ways 20 --shots 1 --queries 5 \
  --minutes 3 --seed 0 --out "$OUT/run"
python benches/tta_omniglot.py "$OUT/run" --episodes "${EPISODES:-200}" --device cpu
