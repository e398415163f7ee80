"""Support-label noise against robust prototypes, on a trained ProtoNet run.

For each prototype method, the accuracy on the same test episodes with clean supports and
with a fraction ``rate`` of each class's support labels flipped (symmetric noise), and the
share of the mean prototype's loss that the method recovers:
``(acc_method_noisy - acc_mean_noisy) / (acc_clean - acc_mean_noisy)``.

    METAROBUST_DATA=../shared/data python benches/robust_label_noise.py RUN_DIR \
        [--ways 5 --shots 5 --rate 0.4 --episodes 600]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import metarobust as mr
from metarobust.evaluate import mean_ci95
from metarobust.robust import apply_label_noise
from metarobust.train import load_dataset

METHODS = mr.ops.METHODS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--kind", default="symmetric")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--split", default=None)
    p.add_argument("--data-root", default=os.environ.get("METAROBUST_DATA"))
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()

    learner = mr.load_run(args.run_dir)
    cfg = learner.config
    if args.data_root:
        cfg.data_root = args.data_root
    split = args.split or {"glyphs": "test", "omniglot": "evaluation"}.get(cfg.dataset)
    ds = load_dataset(cfg, split, "test")
    sampler = mr.EpisodeSampler(ds, ways=args.ways, shots=args.shots, queries=args.queries,
                                seed=args.seed, dtype="uint8")
    acc: dict[tuple[str, bool], list[torch.Tensor]] = {}
    corrupted = 0
    with torch.no_grad():
        for start in range(0, args.episodes, 10):
            n = min(10, args.episodes - start)
            clean = sampler.sample_batch(start, n)
            noisy, counts = apply_label_noise(clean, args.kind, args.rate, seed=args.seed,
                                              start=start, dataset=ds)
            corrupted += int(counts.sum())
            for method in METHODS:
                learner.prototype = method
                for is_noisy, batch in ((False, clean), (True, noisy)):
                    acc.setdefault((method, is_noisy), []).append(
                        learner.evaluate_batch(batch, args.ways))
    rows = []
    base_clean = mean_ci95(torch.cat(acc["mean", False]))[0]
    base_noisy = mean_ci95(torch.cat(acc["mean", True]))[0]
    for method in METHODS:
        (c, cci), (n, nci) = (mean_ci95(torch.cat(acc[method, f])) for f in (False, True))
        recovered = (n - base_noisy) / max(base_clean - base_noisy, 1e-12)
        rows.append({"prototype": method, "clean": c, "clean_ci95": cci, "noisy": n,
                     "noisy_ci95": nci, "recovered": recovered})
        print(f"{method:17s} clean {100 * c:6.2f}% ± {100 * cci:.2f}   noisy "
              f"{100 * n:6.2f}% ± {100 * nci:.2f}   recovers {100 * recovered:5.1f}% of the "
              f"mean prototype's loss")
    print(json.dumps({"run": args.run_dir, "ways": args.ways, "shots": args.shots,
                      "kind": args.kind, "rate": args.rate, "episodes": args.episodes,
                      "corrupted_per_episode": corrupted / args.episodes, "rows": rows}))


if __name__ == "__main__":
    main()
