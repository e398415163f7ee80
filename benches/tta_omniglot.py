"""Test-time adaptation on Omniglot: a trained run's accuracy on the clean test episodes,
under every corruption at severity 3 and on the domain-shift targets, with no adaptation,
``bn`` and ``tent``, on the same episodes; the differences to no adaptation are paired
(per-episode differences, 95% CI). Prints a Markdown table.

    python benches/tta_omniglot.py RUN_DIR [--episodes 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import collections

import torch

from metarobust.corruption_info import CORRUPTIONS
from metarobust.evaluate import mean_ci95
from metarobust.robust import run_suite
from metarobust.train import load_dataset, load_run

MODES = ("none", "bn", "tent")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    learner = load_run(args.run_dir)
    cfg = learner.config
    ds = load_dataset(cfg, "evaluation", "test")
    grid = {"clean": [0.0], **{f"corruption:{c}": [3.0] for c in CORRUPTIONS},
            "domain_shift:glyphs": [0.0], "domain_shift:fashion_mnist": [0.0]}
    res = run_suite(learner, ds, ways=5, shots=1, queries=15, grid=grid,
                    episodes=args.episodes, seed=1234, device=args.device, source="omniglot",
                    image_size=cfg.image_size, tta=MODES, progress=False, per_episode=True)
    by_family: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
    for row in res["rows"]:
        mode = row["setting"].rsplit("tta ", 1)[1] if ", tta " in row["setting"] else "none"
        by_family[row["family"]][mode] = row["per_episode"]
    print("| family | none | bn | tent | bn - none (paired) | tent - none (paired) |")
    print("|---|---|---|---|---|---|")
    for family, accs in by_family.items():
        cells = []
        for mode in MODES:
            m, ci = mean_ci95(torch.tensor(accs[mode]))
            cells.append(f"{100 * m:.1f} ± {100 * ci:.1f}")
        for mode in MODES[1:]:
            m, ci = mean_ci95(torch.tensor(accs[mode]) - torch.tensor(accs["none"]))
            cells.append(f"{100 * m:+.1f} ± {100 * ci:.1f}")
        print(f"| {family} | " + " | ".join(cells) + " |")
    for s in res["skipped"]:
        print(f"\nskipped {s['family']}: {s['reason']}")
    print(f"\n{args.episodes} episodes per cell, 5-way 1-shot, 15 queries per class, "
          f"seed 1234; {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
