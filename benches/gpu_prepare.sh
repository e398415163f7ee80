#!/usr/bin/env bash
# Fills .devcarry (ignored by git) with what benches/gpu_check.sh needs on a GPU machine that
# has no Rust toolchain, no network and no ../shared: the abi3 wheel, tomli-w, and Omniglot
# (the npz arrays for `metarobust bench maml`, the PNG trees as zips, the Vinyals split
# files; about 15 MiB in all).
# Usage: METAROBUST_DATA=../shared/data bash benches/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(cd "${METAROBUST_DATA:?set METAROBUST_DATA to the folder holding omniglot-py/}" && pwd)
[ -d .devcarry ] && chmod -R u+w .devcarry
rm -rf .devcarry && mkdir -p .devcarry/data
maturin build --release -q -o .devcarry
python3 -m pip download -q --no-deps -d .devcarry tomli-w
cp -r "$DATA/omniglot-npz" "$DATA/omniglot-splits" .devcarry/data/
chmod -R u+w .devcarry/data
for split in background evaluation; do
  (cd "$DATA/omniglot-py" && zip -q -r -0 "$OLDPWD/.devcarry/data/images_$split.zip" "images_$split")
done
du -sh .devcarry
