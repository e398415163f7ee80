"""``metarobust robustness``: a run's robustness suite (:mod:`metarobust.robust.suite`),
written as robustness.json, .csv and .png, with other runs alongside (``--compare``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..config import DATASETS
from ..corruption_info import CORRUPT_TARGETS
from ..data.shift import FASHION_MNIST_DIR
from ..robust.grid import SUITES, check_grid, suite_grid
from ._common import (
    PROTOTYPE_HELP,
    TTA_CHOICES,
    TTA_HELP,
    eval_split,
    holds_caches,
    set_test_prototype,
)

HELP = """\
Evaluate a trained run over a grid of perturbations and write robustness.json, .csv and
.png (accuracy with 95% CI bands against strength, one panel per family) to --out (default:
the run directory), and a table to stdout; the last stdout line is a JSON object with the
paths. Families: clean; label_noise_symmetric/paired/outlier (strength: rate; at the test
shots and at 5 shots); gaussian_noise (pixel noise std); corruption:<name> (severity 1-5);
fgsm, pgd, pgd_support (L-inf eps; PGD 20 steps of eps/4); domain_shift:<target> (glyphs
runs: omniglot evaluation; omniglot runs: glyphs test, Fashion-MNIST t10k without
inversion, and inverted beyond quick). Every cell uses the same test episodes (same seed).
Levels: quick (a few cells, 200 episodes, no PGD), default (600), full (every family and
severity, 1000). Fashion-MNIST needs: apt-get install -y dataset-fashion-mnist."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    r = sub.add_parser("robustness", help="robustness suite of a run: JSON, CSV and PNG",
                       description=HELP)
    r.add_argument("run_dir", help="a `metarobust train` run directory")
    r.add_argument("--suite", choices=SUITES, default="default",
                   help="grid size: quick | default | full (default: default)")
    r.add_argument("--out", default=None, help="output directory (default: RUN_DIR)")
    r.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                   help="other runs to plot alongside: their robustness.json is used when "
                        "present, otherwise they are evaluated with the same suite and seed "
                        "(and their report written to their own run directory)")
    r.add_argument("--dataset", choices=DATASETS, default=None,
                   help="test on this dataset kind (default: the run's); 'cache' reads "
                        "--data-root as a `metarobust data prepare` cache")
    r.add_argument("--data-root", default=None,
                   help="dataset folder or cache: overrides the run's data_root; also the "
                        "Omniglot root for domain_shift:omniglot (else $METAROBUST_DATA)")
    r.add_argument("--split", default=None,
                   help="test split (default: omniglot evaluation, glyphs test)")
    r.add_argument("--ways", type=int, default=None,
                   help="classes per test episode (default: the run's test ways, at most 5: "
                        "the usual robustness setting, comparable across runs)")
    r.add_argument("--shots", type=int, default=None,
                   help="support items per class (default: the run's test shots)")
    r.add_argument("--queries", type=int, default=None,
                   help="query items per class (default: the run's test queries, else 15)")
    r.add_argument("--prototype", default=None, help=PROTOTYPE_HELP)
    r.add_argument("--episodes", type=int, default=None,
                   help="episodes per cell (default: 200 / 600 / 1000 by suite)")
    r.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                   help="evaluate only these families, with the strengths of --suite (or of "
                        "default/full when --suite lacks them), e.g. clean pgd "
                        "corruption:rotate domain_shift:omniglot")
    r.add_argument("--corrupt", choices=CORRUPT_TARGETS, default="query",
                   help="images that gaussian_noise and corruptions perturb (default: query)")
    r.add_argument("--pgd-steps", type=int, default=20, help="PGD steps (default: 20)")
    r.add_argument("--certify-sigma", type=float, default=0.25,
                   help="certified_l2: smoothing noise standard deviation")
    r.add_argument("--certify-samples", type=int, default=500,
                   help="certified_l2: noisy copies per query bounding its class probability")
    r.add_argument("--certify-episodes", type=int, default=100,
                   help="certified_l2: episodes certified (the first ones of each setting)")
    r.add_argument("--fashion-mnist", default=FASHION_MNIST_DIR, metavar="DIR",
                   help=f"Fashion-MNIST IDX folder (default: {FASHION_MNIST_DIR})")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when torch sees a GPU, else cpu")
    r.add_argument("--seed", type=int, default=1234,
                   help="seed of the test episodes and perturbations (default: 1234)")
    r.add_argument("--tta", nargs="+", choices=TTA_CHOICES, default=["none"], metavar="MODE",
                   help=TTA_HELP + "; each mode but none adds rows for the clean, corruption "
                        "and domain-shift families on the same episodes, e.g. --tta bn tent")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run)
    return r


def families_grid(families: list[str] | None, suite: str, source: str
                  ) -> dict[str, list[float]] | None:
    """``--families``: each with the strengths of ``suite``, else of the larger levels."""
    if families is None:
        return None
    levels = {suite: suite_grid(suite, source)}
    grid = {}
    for fam in families:
        found = [g[fam] for g in levels.values() if fam in g]
        for level in ("default", "full"):
            if not found and level not in levels:
                levels[level] = suite_grid(level, source)
                found = [levels[level][fam]] if fam in levels[level] else []
        if not found:
            check_grid({fam: [0.0] if fam.startswith("domain_shift:") else [1.0]})
            raise ValueError(f"families: {fam!r} is not in the suites for {source} runs; "
                             f"they have {', '.join(levels['full'])}")
        grid[fam] = found[0]
    return grid


def _evaluate_run(args: argparse.Namespace, run_dir: str, device: Any) -> dict[str, Any]:
    import torch

    from ..robust.certify import Smoothing
    from ..robust.suite import run_suite
    from ..train import load_dataset, load_run

    learner = load_run(run_dir)
    cfg = learner.config
    if cfg.dataset == "sinusoid" or getattr(learner, "task", "") != "classification":
        raise ValueError(f"run_dir: {run_dir} is a {cfg.dataset} regression run; the "
                         "robustness suite needs a classification run")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    set_test_prototype(learner, args.prototype)
    trained_on = cfg.dataset  # picks the domain-shift targets
    if args.data_root is not None or args.dataset is not None:
        cfg = dataclasses.replace(cfg, data_root=args.data_root or cfg.data_root,
                                  dataset=args.dataset or cfg.dataset)
    split = eval_split(cfg.dataset, args.split, cfg.data_root)
    ds = load_dataset(cfg, split, "test")

    def given(name: str, default: int) -> int:
        return default if getattr(args, name) is None else getattr(args, name)

    # the Omniglot files of domain_shift:omniglot (a cache root has none: METAROBUST_DATA)
    omniglot_root = cfg.data_root if cfg.dataset == "omniglot" else None
    shift_root = args.data_root or omniglot_root
    if holds_caches(shift_root):
        shift_root = None
    res = run_suite(learner, ds, ways=given("ways", min(cfg.test_ways, 5)),
                    shots=given("shots", cfg.test_shots),
                    queries=given("queries", cfg.test_queries or 15), suite=args.suite,
                    grid=families_grid(args.families, args.suite, trained_on),
                    episodes=args.episodes, seed=args.seed, device=device, source=trained_on,
                    image_size=cfg.image_size, data_root=shift_root,
                    fashion_mnist_root=args.fashion_mnist, corrupt=args.corrupt,
                    pgd_steps=args.pgd_steps, progress=not args.no_progress,
                    smoothing=Smoothing(sigma=args.certify_sigma, samples=args.certify_samples,
                                        episodes=args.certify_episodes),
                    run=str(run_dir), tta=tuple(args.tta))
    res.update(tta=args.tta, suite=args.suite, families=args.families, learner=cfg.learner,
               dataset=cfg.dataset, split=split, device=str(device),
               prototype=getattr(learner, "prototype", None))
    return res


# What makes two results' rows paired: the same test episodes and perturbation streams.
PAIRING = ("seed", "episodes", "ways", "shots", "queries", "dataset", "split", "smoothing")


def unpaired(result: dict[str, Any], other: dict[str, Any]) -> str | None:
    """How ``other`` was evaluated differently from ``result`` (None: on the same episodes)."""
    differ = [k for k in PAIRING if other.get(k) != result.get(k)]
    if not differ:
        return None
    return ", ".join(f"{k} {other.get(k)} (not {result.get(k)})" for k in differ)


def _compared(args: argparse.Namespace, result: dict[str, Any], device: Any
              ) -> list[dict[str, Any]]:
    """The results of ``--compare``, paired with ``result``: a run's report is read when it
    was made on the same episodes; a run whose report was not is evaluated again (and its
    report rewritten); a lone robustness.json that cannot be paired is kept, marked
    ``unpaired`` (the table and the plot say so)."""
    from ..robust.report import load_result, write_report

    compared = []
    for other in args.compare:
        p = Path(other)
        is_run = (p / "config.toml").is_file()
        res = load_result(p) if (p / "robustness.json").is_file() or p.is_file() else None
        if res is None and not is_run:
            raise FileNotFoundError(f"compare: {other} holds neither a robustness.json nor a "
                                    "run (config.toml)")
        if res is not None and (why := unpaired(result, res)) is not None:
            if is_run:
                print(f"metarobust: {other}: its robustness.json is not on the same episodes "
                      f"({why}); evaluating it again", file=sys.stderr)
                res = None
            else:
                print(f"metarobust: warning: {other}: not on the same episodes ({why}); its "
                      "rows are shown as unpaired", file=sys.stderr)
                res = {**res, "unpaired": why}
        if res is None:
            res = _evaluate_run(args, other, device)
            write_report(res, p)
        compared.append(res)
    return compared


def run(args: argparse.Namespace) -> int:
    from ..robust.report import format_table, write_report
    from ..train import resolve_device

    device = resolve_device(args.device)
    result = _evaluate_run(args, args.run_dir, device)
    compared = _compared(args, result, device)
    paths = write_report(result, args.out or args.run_dir, compared)
    print(format_table([result, *compared]))
    for s in result["skipped"]:
        print(f"skipped {s['family']}: {s['reason']}")
    print(json.dumps({"rows": len(result["rows"]), **paths}))
    return 0
