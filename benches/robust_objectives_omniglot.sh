#!/usr/bin/env bash
# Robust meta-training objectives on Omniglot 5-way 1-shot (ProtoNet): natural training,
# adversarial querying (aq), TRADES and ADML, each trained for the same CPU budget
# (MINUTES of training steps, one torch thread, two trainings at a time), then clean and
# PGD-20 L-inf 16/255 accuracy on the same test episodes with paired differences to aq
# (benches/robust_objectives_omniglot.py). Needs METAROBUST_DATA (the folder holding
# omniglot-py/). Writes into OUT (default runs/robust_objectives).
set -euo pipefail
OUT=${OUT:-runs/robust_objectives}
MINUTES=${MINUTES:-6}
EPISODES=${EPISODES:-200}
BETA=${BETA:-6}
mkdir -p "$OUT"
COMMON=(--learner protonet --dataset omniglot --ways 5 --shots 1 --queries 15
        --minutes "$MINUTES" --threads 1 --seed 0)
# PGD at the test radius: 16/255, 7 steps of 4/255
ADV=(--adversarial --adv-eps 0.06274509803921569 --adv-steps 7
     --adv-step-size 0.01568627450980392)
train() { local name=$1; shift; metarobust train "${COMMON[@]}" "$@" --out "$OUT/$name" \
  > "$OUT/$name.log" 2>&1; }
train natural & train aq "${ADV[@]}" & wait
train trades "${ADV[@]}" --adv-method trades --trades-beta "$BETA" &
train adml "${ADV[@]}" --adv-method adml & wait
for pair in "natural aq" "trades adml"; do
  for name in $pair; do
    python benches/robust_objectives_omniglot.py eval "$OUT/$name" --episodes "$EPISODES" &
  done
  wait
done
python benches/robust_objectives_omniglot.py table "$OUT"/{natural,aq,trades,adml}
