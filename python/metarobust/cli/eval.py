"""``metarobust eval``: a run's mean accuracy (or regression MSE) with a 95% CI; the last
stdout line is one JSON object."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import TTA_CHOICES, TTA_HELP
from ._test_run import add_test_run_args, given, load_test_run, test_sampler


def add_parser(sub: Any) -> argparse.ArgumentParser:
    e = sub.add_parser("eval", help="evaluate a run: mean accuracy with a 95%% CI")
    add_test_run_args(e, episodes=600)
    e.add_argument("--tta", choices=TTA_CHOICES, default="none", help=TTA_HELP)
    e.set_defaults(func=run)
    return e


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate
    from ..robust.tta import TTALearner
    from ..train import resolve_device

    learner = load_test_run(args)
    cfg = learner.config
    if cfg.dataset == "sinusoid":
        for name in ("dataset", "data_root", "split", "ways"):
            if getattr(args, name) is not None:
                raise ValueError(f"{name}: a sinusoid run is evaluated on drawn sinusoid "
                                 f"tasks (--shots, --queries, --inner-steps apply)")
        if args.tta != "none":
            raise ValueError(f"tta: {args.tta!r} adapts classifiers; a sinusoid run takes "
                             "'none'")
        return _run_regression(args, learner, cfg)
    sampler, cfg, split = test_sampler(args, cfg)
    device = resolve_device(args.device)
    model = TTALearner(learner, args.tta) if args.tta != "none" else learner
    res = evaluate(model.to(device), sampler, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset=cfg.dataset, split=split, tta=args.tta)
    tta = f", tta {args.tta}" if args.tta != "none" else ""
    print(f"{cfg.learner} on {cfg.dataset}/{split}: {sampler.ways}-way {sampler.shots}-shot"
          f"{tta}, accuracy {100 * res['accuracy']:.2f}% ± {100 * res['ci95']:.2f}% "
          f"(95% CI, {res['episodes']} episodes)")
    print(json.dumps(res))
    return 0


def _run_regression(args: argparse.Namespace, learner: Any, cfg: Any) -> int:
    from ..data import sinusoid
    from ..evaluate import evaluate_regression
    from ..train import resolve_device

    tasks = sinusoid(shots=given(args, "shots", cfg.test_shots),
                     queries=given(args, "queries", cfg.test_queries or 10), seed=args.seed)
    device = resolve_device(args.device)
    res = evaluate_regression(learner.to(device), tasks, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset="sinusoid")
    steps = ", ".join(f"{k} steps {v:.3f}" for k, v in res["mse_by_steps"].items())
    print(f"{cfg.learner} on sinusoid, {tasks.shots}-shot: query MSE {res['mse']:.3f} "
          f"± {res['ci95']:.3f} after {learner.test_inner_steps} steps ({steps}; "
          f"{res['episodes']} tasks)")
    print(json.dumps(res))
    return 0
