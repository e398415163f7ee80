"""Robust meta-training objectives on Omniglot: a trained run's clean and PGD-20 L-inf
accuracy on the same 5-way 1-shot test episodes (Omniglot evaluation split), and a table
comparing runs with paired differences to a reference run.

    python benches/robust_objectives_omniglot.py eval RUN_DIR [--episodes 1000] [--eps 16/255]
    python benches/robust_objectives_omniglot.py table RUN_DIR... [--reference aq]

``eval`` writes RUN_DIR/objectives_eval.json (per-episode accuracies); ``table`` reads them
and prints a Markdown table (steps reached from each run's last.pt) over the episodes all
the runs share (the first n of each).
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import torch

from metarobust.checkpoint import load_checkpoint
from metarobust.evaluate import mean_ci95
from metarobust.robust import run_suite
from metarobust.train import load_dataset, load_run

SEED = 1234  # the test episodes and the PGD random starts: the same for every run


def evaluate(run: Path, episodes: int, eps: float) -> None:
    torch.set_num_threads(1)
    learner = load_run(run)
    cfg = learner.config
    ds = load_dataset(cfg, "evaluation", "test")
    res = run_suite(learner, ds, ways=5, shots=1, queries=15,
                    grid={"clean": [0.0], "pgd": [eps]}, episodes=episodes, seed=SEED,
                    device="cpu", source="omniglot", image_size=cfg.image_size,
                    pgd_steps=20, progress=False, per_episode=True)
    rows = {row["family"]: row["per_episode"] for row in res["rows"]}
    out = {"episodes": episodes, "eps": eps, "seconds": res["seconds"], **rows}
    (run / "objectives_eval.json").write_text(json.dumps(out))
    print(json.dumps({k: v for k, v in out.items() if k not in rows}))


def table(runs: list[Path], reference: str) -> None:
    data = {r.name: json.loads((r / "objectives_eval.json").read_text()) for r in runs}
    # runs evaluated on more episodes are compared on the first n, the episodes all share
    # (the episodes and PGD starts depend on the seed and the position only)
    n = min(len(d["clean"]) for d in data.values())
    for d in data.values():
        d.update(clean=d["clean"][:n], pgd=d["pgd"][:n], episodes=n)
    ref = data.get(reference)
    print("| method | steps | clean acc. % | PGD-20 acc. % | clean - ref (paired) | "
          "PGD-20 - ref (paired) |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        d = data[r.name]
        steps = load_checkpoint(r / "last.pt")["step"]
        cells = [r.name, str(steps)]
        for fam in ("clean", "pgd"):
            m, ci = mean_ci95(torch.tensor(d[fam]))
            cells.append(f"{100 * m:.1f} ± {100 * ci:.1f}")
        for fam in ("clean", "pgd"):
            if ref is None or r.name == reference:
                cells.append("")
                continue
            m, ci = mean_ci95(torch.tensor(d[fam]) - torch.tensor(ref[fam]))
            cells.append(f"{100 * m:+.1f} ± {100 * ci:.1f}")
        print("| " + " | ".join(cells) + " |")
    any_run = next(iter(data.values()))
    print(f"\n{any_run['episodes']} episodes (5-way 1-shot, 15 queries per class, Omniglot "
          f"evaluation split, seed {SEED}); PGD: L-inf eps {any_run['eps']:.4f}, 20 steps of "
          "eps/4, random start; ± 95% CI")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("run", type=Path)
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--eps", default="16/255")
    t = sub.add_parser("table")
    t.add_argument("runs", type=Path, nargs="+")
    t.add_argument("--reference", default="aq")
    args = ap.parse_args()
    if args.cmd == "eval":
        evaluate(args.run, args.episodes, float(Fraction(args.eps)))
    else:
        table(args.runs, args.reference)


if __name__ == "__main__":
    main()
