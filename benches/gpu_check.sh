#!/usr/bin/env bash
# GPU checks, in a few minutes, with no build step on the GPU machine.
# Prepare here:  maturin build --release -o .devcarry   (an abi3 wheel; .devcarry is ignored)
# Run there:     bash benches/gpu_check.sh               (carrying .devcarry)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.devcarry}
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/metarobust-*.whl
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import metarobust, torch; print('metarobust', metarobust.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA-marked tests"
python3 -m pytest tests -m cuda -q -rs -p no:cacheprovider

echo "== CPU tests on this machine's cores (determinism across thread counts included)"
python3 -m pytest tests/test_episodes.py tests/test_ops.py tests/test_data_glyphs.py -q -p no:cacheprovider

echo "== GPU figures"
python3 benches/gpu_ops.py
