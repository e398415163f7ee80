"""Robustness sweep of several trained runs side by side: naturally vs robustly trained.

Every run is evaluated by :func:`metarobust.robust.run_suite` on the same test episodes
(same seed) over one grid: clean, symmetric support-label noise (1 and 5 shots), Gaussian
pixel noise, five corruptions at severity 3, FGSM (L-inf, 8/255 and 16/255), PGD-20 (16/255,
steps of eps/4, random start) and domain shift. Writes each run's report to
``OUT/<label>/`` and a comparison plot to ``OUT/robustness.png``; prints the table (the
README's sweep table) and, when two or more runs are given, the first run's gain over the
second at PGD-20 16/255 and its loss of clean accuracy (the adversarial-querying targets:
>= 20 points and <= 5 points).

    METAROBUST_DATA=../shared/data python benches/robust_sweep.py \\
        aq=runs/aq16 natural=runs/proto augmented=runs/proto_aug \\
        --out reports/sweep [--episodes 200]

A run is ``[LABEL=]RUN_DIR[:PROTOTYPE]``: PROTOTYPE overrides the run's prototype at test
time (ProtoNet: mean, median, trimmed_mean, geometric_median, filtered_mean); or
``[LABEL=]PATH/robustness.json`` of an earlier sweep, shown as it is. ``--no-attacks`` leaves
FGSM and PGD out of the runs evaluated now (they cost most of the time on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import metarobust as mr
from metarobust.robust import format_table, load_result, plot_results, run_suite, write_report
from metarobust.train import load_dataset

GRID = {
    "clean": [0.0],
    "label_noise_symmetric": [0.2, 0.4, 0.6],
    "gaussian_noise": [0.2],
    **{f"corruption:{n}": [3.0] for n in ("gaussian_blur", "thin", "elastic", "occlusion",
                                          "rotate")},
    "fgsm": [8 / 255, 16 / 255],
    "pgd": [16 / 255],  # each PGD-20 cell costs about 40 clean cells
    "domain_shift:glyphs": [0.0],
    "domain_shift:fashion_mnist": [0.0],
}


def parse_run(spec: str) -> tuple[str, str, str | None]:
    label, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path, _, prototype = rest.partition(":")
    return label or Path(path).name, path, prototype or None


def accuracy(result: dict, family: str, strength: float) -> float:
    for r in result["rows"]:
        if r["family"] == family and abs(r["strength"] - strength) < 1e-9 and \
                r["setting"].startswith(f"{result['ways']}-way {result['shots']}-shot"):
            return r["accuracy"]
    raise KeyError((family, strength))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR[:PROTOTYPE]")
    p.add_argument("--out", default="reports/sweep")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--data-root", default=os.environ.get("METAROBUST_DATA"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-attacks", action="store_true", help="no FGSM/PGD cells")
    args = p.parse_args()

    grid = {k: v for k, v in GRID.items() if not (args.no_attacks and k in ("fgsm", "pgd"))}
    results = []
    for spec in args.runs:
        label, path, prototype = parse_run(spec)
        if path.endswith(".json"):
            res = load_result(path)
            res["run"] = label
            results.append(res)
            continue
        learner = mr.load_run(path)
        cfg = learner.config
        if args.data_root:
            cfg.data_root = args.data_root
        if prototype is not None:
            learner.prototype = prototype
        split = {"glyphs": "test", "omniglot": "evaluation"}.get(cfg.dataset)
        ds = load_dataset(cfg, split, "test")
        t0 = time.perf_counter()
        res = run_suite(learner, ds, ways=args.ways, shots=args.shots, queries=args.queries,
                        grid=grid, episodes=args.episodes, seed=args.seed, device=args.device,
                        source=cfg.dataset, image_size=cfg.image_size,
                        data_root=args.data_root, run=label)
        res.update(path=path, prototype=prototype or getattr(learner, "prototype", None),
                   adversarial=cfg.adversarial, augment=cfg.augment)
        write_report(res, Path(args.out) / label)
        print(f"{label}: {time.perf_counter() - t0:.0f} s", flush=True)
        results.append(res)
    plot_results(results, Path(args.out) / "robustness.png")
    print(format_table(results))
    summary = {"episodes": args.episodes, "runs": [r["run"] for r in results]}
    if len(results) >= 2 and all(any(r["family"] == "pgd" for r in res["rows"])
                                 for res in results[:2]):
        a, b = results[:2]
        gain = accuracy(a, "pgd", 16 / 255) - accuracy(b, "pgd", 16 / 255)
        loss = accuracy(b, "clean", 0.0) - accuracy(a, "clean", 0.0)
        summary.update(pgd16_gain=gain, clean_loss=loss, gain_met=gain >= 0.20,
                       clean_loss_met=loss <= 0.05)
        print(f"{a['run']} vs {b['run']}: PGD-20 16/255 {100 * gain:+.2f} points (target "
              f">= +20), clean {-100 * loss:+.2f} points (target >= -5)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
