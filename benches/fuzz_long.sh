#!/usr/bin/env bash
# The long fuzz run: 100,000 cases (CASES=...) of fuzz/run.py over every target, seed 0
# (SEED=...); its table and failure classes go to benches/results/fuzz_long.txt, the
# reproducers to fuzz/out/long/failures. Exits as fuzz/run.py does (1: some case failed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CASES=${CASES:-100000}
SEED=${SEED:-0}
OUT=fuzz/out/long
RESULT=benches/results/fuzz_long.txt
mkdir -p "$OUT"
start=$(date +%s)
$PY fuzz/run.py --cases "$CASES" --seed "$SEED" --out "$OUT" "$@" > "$OUT/stdout.txt"
status=$?
{
  echo "# benches/fuzz_long.sh: python fuzz/run.py --cases $CASES --seed $SEED $*"
  echo "# $(date -u +%F), $(nproc) CPUs, $(( $(date +%s) - start )) s, exit status $status"
  echo "# outcomes: see fuzz/classify.py; one line per failure class, with a reproducer"
  echo
  cat "$OUT/stdout.txt"
} > "$RESULT"
cat "$RESULT"
exit $status
