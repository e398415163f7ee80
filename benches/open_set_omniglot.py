"""Open-set queries on trained runs: the AUROC of each score at an unknown fraction, and
the paired gain of the SnaTCHer-style score over the plain ones (ProtoNet).

For each run, the same open-set test episodes (a fraction ``--unknown`` of the queries from
classes outside the episode): the accuracy on the known queries, each score's AUROC with its
95% CI over episodes, and, where the run has the ``snatcher`` score, its per-episode AUROC
minus that of each other score, with the 95% CI of that paired difference.

    METAROBUST_DATA=../shared/data python benches/open_set_omniglot.py RUN_DIR [RUN_DIR ...] \\
        [--ways 5 --shots 1 --queries 15 --unknown 0.5 --episodes 600]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import metarobust as mr
from metarobust.evaluate import mean_ci95
from metarobust.robust import evaluate_open_set
from metarobust.train import load_dataset


def one_run(run_dir: str, args: argparse.Namespace) -> dict:
    learner = mr.load_run(run_dir).eval()
    cfg = learner.config
    if args.data_root:
        cfg.data_root = args.data_root
    split = args.split or {"glyphs": "test", "omniglot": "evaluation"}.get(cfg.dataset)
    ds = load_dataset(cfg, split, "test")
    res = evaluate_open_set(learner, ds, ways=args.ways, shots=args.shots,
                            queries=args.queries, unknown_fraction=args.unknown,
                            episodes=args.episodes, seed=args.seed)
    first = next(iter(res.values()))
    out = {"run": run_dir, "learner": cfg.learner, "accuracy": first["accuracy"],
           "accuracy_ci95": first["ci95"], "scores": {}, "gains": {}}
    print(f"{run_dir} ({cfg.learner}): known-query accuracy {100 * first['accuracy']:.2f}% "
          f"± {100 * first['ci95']:.2f}")
    for score, r in res.items():
        out["scores"][score] = {"auroc": r["auroc"], "auroc_ci95": r["auroc_ci95"]}
        print(f"  AUROC {score:13s} {r['auroc']:.4f} ± {r['auroc_ci95']:.4f}")
    if "snatcher" in res:
        snatch = torch.tensor(res["snatcher"]["auroc_per_episode"])
        for score in res:
            if score != "snatcher":
                gain, ci = mean_ci95(snatch - torch.tensor(res[score]["auroc_per_episode"]))
                out["gains"][f"snatcher - {score}"] = {"mean": gain, "ci95": ci}
                print(f"  gain snatcher - {score:13s} {gain:+.4f} ± {ci:.4f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--unknown", type=float, default=0.5)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--split", default=None)
    p.add_argument("--data-root", default=os.environ.get("METAROBUST_DATA"))
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    rows = [one_run(r, args) for r in args.run_dirs]
    print(json.dumps({"ways": args.ways, "shots": args.shots, "queries": args.queries,
                      "unknown_fraction": args.unknown, "episodes": args.episodes,
                      "seed": args.seed, "runs": rows}))


if __name__ == "__main__":
    main()
