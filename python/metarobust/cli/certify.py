"""``metarobust certify``: certified accuracy of a run by randomized smoothing of the
queries (Cohen et al., 2019), written to ``certify.json`` and ``certify.png``; the last
stdout line is a JSON summary."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._test_run import add_test_run_args, load_test_run, test_sampler


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "certify", help="certified accuracy against L2 perturbations (randomized smoothing)",
        description="Certifies the run's classifier on test episodes: each query is "
                    "smoothed with Gaussian noise (the support set stays clean); n0 noisy "
                    "copies choose the class, n more bound its probability (Clopper-Pearson "
                    "at 1 - alpha), and the certified L2 radius is sigma * Phi^-1(bound); "
                    "below 1/2 the query abstains (counted as wrong).")
    add_test_run_args(p, episodes=100)
    p.add_argument("--sigma", type=float, default=0.25,
                   help="standard deviation of the smoothing noise (images in [0, 1])")
    p.add_argument("--samples", type=int, default=1000,
                   help="noisy copies per query that bound the class probability (n)")
    p.add_argument("--n0", type=int, default=100,
                   help="noisy copies per query that choose the class")
    p.add_argument("--alpha", type=float, default=0.001,
                   help="failure probability of each query's certificate")
    p.add_argument("--radii", default="0,0.125,0.25,0.375,0.5",
                   help="comma-separated L2 radii reported with their CI (--samples copies "
                        "certify at most sigma * Phi^-1(alpha ** (1 / samples)): 0.62 at "
                        "the defaults)")
    p.add_argument("--batch", type=int, default=1000, help="noisy images per forward pass")
    p.add_argument("--out", required=True, help="folder for certify.json and certify.png")
    p.set_defaults(func=run)
    return p


def _radii(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"radii: expected comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..robust.certify import certify
    from ..robust.certify_report import write_certify
    from ..train import resolve_device

    learner = load_test_run(args)
    cfg = learner.config
    if cfg.dataset == "sinusoid":
        raise ValueError("run_dir: a sinusoid regression run has no classes to certify")
    sampler, cfg, split = test_sampler(args, cfg)
    device = resolve_device(args.device)
    res = certify(learner.to(device), sampler, episodes=args.episodes, sigma=args.sigma,
                  samples=args.samples, n0=args.n0, alpha=args.alpha,
                  radii=_radii(args.radii), seed=args.seed, device=device, batch=args.batch,
                  progress=True)
    res.update(learner=cfg.learner, dataset=cfg.dataset, split=split, run_dir=args.run_dir)
    paths = write_certify(res, args.out)
    for row in res["radii"]:
        beyond = "" if row["certifiable"] else \
            f" (beyond {res['max_certifiable_radius']:.3g}, what --samples can certify)"
        print(f"radius {row['radius']:g}: certified accuracy "
              f"{100 * row['certified_accuracy']:.2f}% ± {100 * row['ci95']:.2f}%{beyond}")
    print(f"abstained on {100 * res['abstention']:.1f}% of queries; clean accuracy "
          f"{100 * res['clean_accuracy']:.2f}%; wrote {paths['json']}, {paths['png']}")
    summary = {k: v for k, v in res.items() if k != "queries"}
    print(json.dumps(summary))
    return 0
