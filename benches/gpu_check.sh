#!/usr/bin/env bash
# GPU checks, in under ten minutes, with no build step on the GPU machine.
# Prepare here:  METAROBUST_DATA=../shared/data bash benches/gpu_prepare.sh
#                (fills the ignored .devcarry: the abi3 wheel, tomli-w, Omniglot)
# Run there:     bash benches/gpu_check.sh               (carrying .devcarry)
# MINUTES (default 2) sets the Vinyals ProtoNet training budget.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.devcarry}
DATA=${DATA:-.devcarry/data}
MINUTES=${MINUTES:-2}
SITE=$(mktemp -d)
RUNS=$(mktemp -d)
# the wheel, plus any pure-Python dependency the GPU image lacks (tomli-w)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import metarobust, torch; print('metarobust', metarobust.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA-marked tests"
python3 -m pytest tests -m cuda -q -rs -p no:cacheprovider

echo "== CPU and CUDA tests of the sampler, kernels and learners on this machine"
python3 -m pytest tests/test_episodes.py tests/test_ops.py tests/test_data_glyphs.py \
    tests/test_learners.py tests/test_models.py tests/test_train.py -q -p no:cacheprovider

if [ -f "$DATA/images_background.zip" ] || [ -d "$DATA/omniglot-py" ]; then
  echo "== MAML on Omniglot 5w1s15q, meta-batch 32: batched (vmap) vs per-task paths, tasks/s"
  echo "   and peak memory (target: batched >= 4x per-task, second order)"
  python3 -m metarobust bench maml --device cuda --data-root "$DATA" --repeats 2

  echo "== ProtoNet 60w5s5q on Omniglot: channels_last and bf16 on and off"
  python3 benches/protonet_flags.py --device cuda --data-root "$DATA" --rounds 1 --steps 150

  echo "== ProtoNet, Snell et al.'s recipe on the Vinyals split, $MINUTES minutes"
  echo "   (paper: 98.8% 5w1s, 96.0% 20w1s after 200,000 episodes)"
  python3 -m metarobust train --config configs/omniglot_protonet_vinyals.toml \
      --data-root "$DATA" --split "$DATA/omniglot-splits/vinyals/train.txt" \
      --val-split "$DATA/omniglot-splits/vinyals/val.txt" --minutes "$MINUTES" \
      --device cuda --out "$RUNS/vinyals" | tail -1
  for ways in 5 20; do
    python3 -m metarobust eval "$RUNS/vinyals" --dataset omniglot --data-root "$DATA" \
        --split "$DATA/omniglot-splits/vinyals/test.txt" --ways "$ways" --shots 1 \
        --episodes 1000 --device cuda | tail -1
  done
else
  echo "== no Omniglot in $DATA (run benches/gpu_prepare.sh first): Omniglot checks skipped"
fi

echo "== GPU figures: the uint8 episode path and the ops on CUDA"
python3 benches/gpu_ops.py
