#!/usr/bin/env bash
# GPU checks, in a few minutes, with no build step on the GPU machine.
# Prepare here:  maturin build --release -o .devcarry   (an abi3 wheel; .devcarry is ignored)
#                pip download --no-deps -d .devcarry tomli-w
# Run there:     bash benches/gpu_check.sh               (carrying .devcarry)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.devcarry}
SITE=$(mktemp -d)
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

echo "== training on the GPU (embedded glyphs): ProtoNet 20w1s5q, MAML 5w1s15q meta-batch 32"
RUNS=$(mktemp -d)
python3 -m metarobust train --learner protonet --dataset glyphs --ways 20 --shots 1 \
    --queries 5 --episodes 3000 --device cuda --out "$RUNS/proto" | tail -1
python3 -m metarobust eval "$RUNS/proto" --ways 5 --shots 1 --episodes 600 | tail -1
python3 -m metarobust train --learner maml --dataset glyphs --ways 5 --shots 1 --queries 15 \
    --meta-batch 32 --episodes 6400 --device cuda --out "$RUNS/maml" | tail -1
python3 -m metarobust eval "$RUNS/maml" --ways 5 --shots 1 --episodes 600 | tail -1

echo "== GPU figures"
python3 benches/gpu_ops.py
