#!/usr/bin/env bash
# GPU checks, in under ten minutes, with no build step on the GPU machine.
# Prepare here:  METAROBUST_DATA=../shared/data bash benches/gpu_prepare.sh
#                (fills the ignored .devcarry: the abi3 wheel, tomli-w, Omniglot)
# Run there:     bash benches/gpu_check.sh               (carrying .devcarry)
# PROTO_MINUTES (default 3) and MAML_MINUTES (default 1.5) set the training budgets; with
# OUT set, the training runs' metrics.jsonl files are copied there.
# A failing or overrunning step is reported and the script goes on to the next one; a step
# is cut short where it would pass DEADLINE (default 570) seconds after the first step began.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.devcarry}
DATA=${DATA:-.devcarry/data}
PROTO_MINUTES=${PROTO_MINUTES:-2.5}
MAML_MINUTES=${MAML_MINUTES:-1.5}
SITE=$(mktemp -d)
RUNS=$(mktemp -d)
SPLITS="$DATA/omniglot-splits/vinyals"
# the wheel, plus any pure-Python dependency the GPU image lacks (tomli-w)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import metarobust, torch; print('metarobust', metarobust.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

START=$SECONDS
DEADLINE=${DEADLINE:-570}
step() {  # step TITLE LIMIT_S COMMAND...
  local title=$1 limit=$2 t0=$SECONDS rc left
  shift 2
  echo "== $title"
  left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 15 ]; then echo "   [skipped: past the deadline]"; return; fi
  [ "$left" -lt "$limit" ] && limit=$left
  timeout "$limit" "$@"
  rc=$?
  echo "   [$((SECONDS - t0)) s, exit $rc, $((SECONDS - START)) s in all]"
}

step "CUDA-marked tests" 120 python3 -m pytest tests -m cuda -q -rs -p no:cacheprovider

if [ -f "$DATA/images_background.zip" ] || [ -d "$DATA/omniglot-py" ]; then
  step "MAML on Omniglot 5w1s15q, meta-batch 32: batched (vmap) vs per-task, tasks/s and
   peak memory (target: batched >= 4x per-task, second order)" 120 \
    python3 -m metarobust bench maml --device cuda --data-root "$DATA" --repeats 2

  step "ProtoNet 60w5s5q on Omniglot: channels_last, bf16 and torch.compile on and off" 150 \
    python3 benches/protonet_flags.py --device cuda --data-root "$DATA" --rounds 1 \
      --steps 150 --compile

  step "ProtoNet, Snell et al.'s recipe on the Vinyals split, $PROTO_MINUTES minutes
   (paper: 98.8% 5w1s, 96.0% 20w1s after 200,000 episodes)" $((90 + ${PROTO_MINUTES%.*} * 60)) \
    python3 -m metarobust train --config configs/omniglot_protonet_vinyals.toml \
      --data-root "$DATA" --split "$SPLITS/train.txt" --val-split "$SPLITS/val.txt" \
      --minutes "$PROTO_MINUTES" --device cuda --out "$RUNS/proto"
  for ways in 5 20; do
    step "ProtoNet eval, Vinyals test classes, ${ways}w1s, 1000 episodes" 60 \
      python3 -m metarobust eval "$RUNS/proto" --dataset omniglot --data-root "$DATA" \
        --split "$SPLITS/test.txt" --ways "$ways" --shots 1 --episodes 1000 --device cuda
  done

  step "Second-order MAML, Finn et al.'s recipe (meta-batch 32), $MAML_MINUTES minutes
   (paper: 98.7% 5w1s after 60,000 steps, 5-16 GPU-hours reported)" \
      $((90 + ${MAML_MINUTES%.*} * 60 + 60)) \
    python3 -m metarobust train --config configs/omniglot_maml_5w1s.toml \
      --data-root "$DATA" --split "$SPLITS/train.txt" --val-split "$SPLITS/val.txt" \
      --minutes "$MAML_MINUTES" --device cuda --out "$RUNS/maml"
  step "MAML eval, Vinyals test classes, 5w1s, 1000 episodes" 60 \
    python3 -m metarobust eval "$RUNS/maml" --dataset omniglot --data-root "$DATA" \
      --split "$SPLITS/test.txt" --ways 5 --shots 1 --episodes 1000 --device cuda

  step "GPU idle time per step (prefetching sampler, pinned uint8, non-blocking copies)" 90 \
    python3 benches/gpu_idle.py --device cuda --data-root "$DATA" --steps 100

  step "ProtoNet ResNet-12 at 84x84 (Omniglot resized), 5w5s15q: channels_last, bf16 and
   torch.compile on and off" 120 \
    python3 benches/protonet_flags.py --device cuda --data-root "$DATA" --model resnet12 \
      --image-size 84 --ways 5 --shots 5 --queries 15 --rounds 1 --warmup 10 --steps 50 \
      --compile reduce-overhead

  if [ -n "${OUT:-}" ]; then
    for run in proto maml; do
      cp "$RUNS/$run/metrics.jsonl" "$OUT/$run.metrics.jsonl" 2>/dev/null || true
    done
  fi
else
  echo "== no Omniglot in $DATA (run benches/gpu_prepare.sh first): Omniglot checks skipped"
fi

# benches/gpu_ops.py (the uint8 episode path, the fused ops on CUDA) ran on an H200 earlier:
# experiments/logs/gpu_check_h200.log; it is left out here for the time.
