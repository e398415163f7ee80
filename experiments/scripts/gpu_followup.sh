#!/usr/bin/env bash
# The follow-up GPU run of 2026-11-27 (output: experiments/logs/gpu_followup_h200.log):
# ProtoNet 60w5s5q episodes/s with the current wheel (steps queue on the GPU without host
# reads; torch.compile's reduce-overhead mode, i.e. CUDA graphs) against the wheel of commit
# 93076bf (loss, accuracy and labels read on the host in every step), then the GPU idle time
# per step. Prepare here: benches/gpu_prepare.sh, then the 93076bf wheel in .devcarry/old/
# (git worktree add /tmp/old 93076bf && (cd /tmp/old && maturin build --release -o OUT)).
# Run there: bash experiments/scripts/gpu_followup.sh (carrying .devcarry). DEV=cpu ST=2 W=1: a dry run.
set -o pipefail
cd "$(dirname "$0")/../.."
DEV=${DEV:-cuda}; ST=${ST:-100}; W=${W:-15}; D=.devcarry/data; S=$(mktemp -d); O=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target $S .devcarry/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --target $O .devcarry/old/*.whl .devcarry/tomli_w*.whl
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
{ echo "== after: no host read in a step, CUDA graphs via compile reduce-overhead"
PYTHONPATH=$S timeout 110 python3 benches/protonet_flags.py --device $DEV --data-root $D --rounds 1 --steps $ST --warmup $W --compile reduce-overhead
echo "== before (93076bf wheel: loss, accuracy and labels read on the host each step)"
PYTHONPATH=$O timeout 60 python3 benches/protonet_flags.py --device $DEV --data-root $D --rounds 1 --steps $ST --warmup $W
echo "== GPU idle after"
PYTHONPATH=$S timeout 40 python3 benches/gpu_idle.py --device $DEV --data-root $D --steps $ST --learners protonet; } 2>&1 | tee ${OUT:-/tmp}/followup.log
