#!/usr/bin/env bash
# ProtoNet on the Omniglot Vinyals split against Snell et al.'s 98.8% (5w1s) and 96.0%
# (20w1s), in one device call of under ten minutes: MINUTES (default 7) of training with
# CONFIG (default configs/omniglot_protonet_vinyals_fast.toml), channels_last and CUDA graphs
# (torch.compile's reduce-overhead mode; without compilation if that fails at once), then
# 1000 test episodes of each. With OUT set, metrics.jsonl and the log are copied there.
# Prepare here:  METAROBUST_DATA=../shared/data bash benches/gpu_prepare.sh
# Run there:     bash benches/gpu_vinyals.sh      (carrying .devcarry; timeout_s 590)
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.devcarry/data}
MINUTES=${MINUTES:-7}
CONFIG=${CONFIG:-configs/omniglot_protonet_vinyals_fast.toml}
SPLITS="$DATA/omniglot-splits/vinyals"
SITE=$(mktemp -d)
RUN=$(mktemp -d)/proto
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .devcarry/*.whl
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
train() {  # train OUT MINUTES [FLAGS...]
  local out=$1 minutes=$2
  shift 2
  python3 -m metarobust train --config "$CONFIG" --data-root "$DATA" \
    --split "$SPLITS/train.txt" --val-split "$SPLITS/val.txt" --minutes "$minutes" \
    --device cuda --out "$out" "$@"
}
echo "== $CONFIG, $MINUTES minutes, compiled (reduce-overhead)"
START=$SECONDS
if ! train "$RUN" "$MINUTES" --compile --compile-mode reduce-overhead; then
  left=$(python3 -c "print(max(1.0, $MINUTES - ($SECONDS - $START) / 60 - 0.5))")
  echo "== compiled training failed after $((SECONDS - START)) s; $left minutes uncompiled"
  RUN="$RUN-plain"
  train "$RUN" "$left"
fi
for ways in 5 20; do
  echo "== eval ${ways}w1s, 1000 Vinyals test episodes"
  python3 -m metarobust eval "$RUN" --dataset omniglot --data-root "$DATA" \
    --split "$SPLITS/test.txt" --ways "$ways" --shots 1 --episodes 1000 --device cuda
done
[ -n "${OUT:-}" ] && cp "$RUN/metrics.jsonl" "$OUT/vinyals.metrics.jsonl"
exit 0
