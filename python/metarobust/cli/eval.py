"""``metarobust eval``: a run's mean accuracy (or regression MSE) with a 95% CI; the last
stdout line is one JSON object."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..config import DATASETS, DEVICES
from ._common import PROTOTYPE_HELP, eval_split, set_test_prototype


def add_parser(sub: Any) -> argparse.ArgumentParser:
    e = sub.add_parser("eval", help="evaluate a run: mean accuracy with a 95%% CI")
    e.add_argument("run_dir", help="a `metarobust train` run directory")
    e.add_argument("--dataset", choices=DATASETS, default=None,
                   help="test dataset (default: the run's)")
    e.add_argument("--data-root", default=None,
                   help="dataset folder or cache (default: the run's, else $METAROBUST_DATA)")
    e.add_argument("--split", default=None,
                   help="test split (default: evaluation for omniglot, test for glyphs)")
    e.add_argument("--ways", type=int, default=None,
                   help="classes per test episode (default: the run's test ways)")
    e.add_argument("--shots", type=int, default=None,
                   help="support items per class (default: the run's test shots)")
    e.add_argument("--queries", type=int, default=None,
                   help="query items per class (default: the run's test queries)")
    e.add_argument("--episodes", type=int, default=600, help="test episodes (tasks)")
    e.add_argument("--inner-steps", type=int, default=None,
                   help="MAML test-time steps (default: the run's test inner steps)")
    e.add_argument("--prototype", default=None, help=PROTOTYPE_HELP)
    e.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: cuda when torch sees a GPU, else cpu")
    e.add_argument("--seed", type=int, default=1234, help="evaluation episode seed")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best.pt (best validation score; the final model of a run without "
                        "validation) or last.pt (the latest state, also after Ctrl-C)")
    e.set_defaults(func=run)
    return e


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("ways", "shots", "queries"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(args, name)}")
    if args.inner_steps is not None and args.inner_steps < 0:
        raise ValueError(f"inner_steps: must be >= 0, got {args.inner_steps}")


def _given(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name)
    return default if value is None else value


def run(args: argparse.Namespace) -> int:
    import torch

    from ..episodes import EpisodeSampler
    from ..evaluate import evaluate
    from ..train import load_dataset, load_run, resolve_device

    _check_counts(args)
    learner = load_run(args.run_dir, args.checkpoint)
    set_test_prototype(learner, args.prototype)
    cfg = learner.config
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.dataset == "sinusoid":
        for name in ("dataset", "data_root", "split", "ways"):
            if getattr(args, name) is not None:
                raise ValueError(f"{name}: a sinusoid run is evaluated on drawn sinusoid "
                                 f"tasks (--shots, --queries, --inner-steps apply)")
        return _run_regression(args, learner, cfg)
    if args.dataset is not None or args.data_root is not None:
        cfg = dataclasses.replace(cfg, dataset=args.dataset or cfg.dataset,
                                  data_root=args.data_root or cfg.data_root)
    split = eval_split(cfg.dataset, args.split, cfg.data_root)
    ds = load_dataset(cfg, split, "test")
    ways = _given(args, "ways", cfg.test_ways)
    shots = _given(args, "shots", cfg.test_shots)
    if args.inner_steps is not None:
        if not hasattr(learner, "test_inner_steps"):
            raise ValueError(f"inner_steps: only MAML-family runs have an inner loop; this "
                             f"run's learner is {type(learner).__name__}")
        learner.test_inner_steps = args.inner_steps
    device = resolve_device(args.device)
    sampler = EpisodeSampler(ds, ways=ways, shots=shots,
                             queries=_given(args, "queries", cfg.test_queries), seed=args.seed,
                             dtype="uint8")
    res = evaluate(learner.to(device), sampler, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset=cfg.dataset, split=split)
    print(f"{cfg.learner} on {cfg.dataset}/{split}: {ways}-way {shots}-shot, "
          f"accuracy {100 * res['accuracy']:.2f}% ± {100 * res['ci95']:.2f}% "
          f"(95% CI, {res['episodes']} episodes)")
    print(json.dumps(res))
    return 0


def _run_regression(args: argparse.Namespace, learner: Any, cfg: Any) -> int:
    from ..data import sinusoid
    from ..evaluate import evaluate_regression
    from ..train import resolve_device

    if args.inner_steps is not None:
        learner.test_inner_steps = args.inner_steps
    tasks = sinusoid(shots=_given(args, "shots", cfg.test_shots),
                     queries=_given(args, "queries", cfg.test_queries or 10), seed=args.seed)
    device = resolve_device(args.device)
    res = evaluate_regression(learner.to(device), tasks, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset="sinusoid")
    steps = ", ".join(f"{k} steps {v:.3f}" for k, v in res["mse_by_steps"].items())
    print(f"{cfg.learner} on sinusoid, {tasks.shots}-shot: query MSE {res['mse']:.3f} "
          f"± {res['ci95']:.3f} after {learner.test_inner_steps} steps ({steps}; "
          f"{res['episodes']} tasks)")
    print(json.dumps(res))
    return 0
