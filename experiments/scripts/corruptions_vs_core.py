"""Corrupted-over-clean sampling time of this build's Rust core against another build's,
side by side in one process (the samplers of both take turns, so the machine's speed at the
moment cancels).

    git worktree add /tmp/old REV && (cd /tmp/old && maturin build --release -o /tmp/wold)
    unzip -p /tmp/wold/*.whl metarobust/_core.abi3.so > /tmp/old_core.so
    METAROBUST_DATA=DATA python experiments/scripts/corruptions_vs_core.py /tmp/old_core.so \
        --names gaussian_noise,elastic --dtypes float32,uint8
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import metarobust.episodes as episodes
from metarobust import bench


def load_core(path: str):
    spec = importlib.util.spec_from_file_location("other_core._core", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("other", help="the other build's _core.abi3.so")
    p.add_argument("--names", default="gaussian_noise,impulse_noise,elastic",
                   help="corruptions, comma-separated")
    p.add_argument("--dtypes", default="float32,uint8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--data-root", default=os.environ.get("METAROBUST_DATA"))
    args = p.parse_args()
    names = [n for n in args.names.split(",") if n]
    cores = {"other": load_core(args.other), "this": episodes._core}
    images, labels, _ = bench.omniglot_like(args.data_root)
    for dtype in args.dtypes.split(","):
        cands = {}
        try:
            for tag, core in cores.items():
                episodes._core = core  # the samplers built now use this core
                built = bench.corruption_candidates(images, labels, dtype=dtype,
                                                    names=["clean", *names])
                cands |= {f"{tag} {name}": fn for name, fn in built.items()}
        finally:
            episodes._core = cores["this"]
        best = {k: bench._stats(v)[0] for k, v in bench.measure(cands, args.repeats, 0.1).items()}
        for tag in cores:
            clean = best[f"{tag} clean"]
            ratios = "  ".join(f"{n} {best[f'{tag} {n}'] / clean:.2f}x" for n in names)
            print(f"{dtype:7}  {tag:5}  clean {clean * 1e3:.2f} ms/batch  {ratios}")


if __name__ == "__main__":
    main()
