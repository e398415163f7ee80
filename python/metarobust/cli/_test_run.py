"""A trained run and its test episodes, as ``eval`` and ``certify`` choose them: the options
they share, the run loaded with its test-time settings, and the EpisodeSampler."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..config import DATASETS, DEVICES
from ._common import PROTOTYPE_HELP, eval_split, set_test_prototype


def add_test_run_args(p: argparse.ArgumentParser, episodes: int) -> None:
    """The run directory and the options choosing its test episodes (``episodes``: the
    default number)."""
    p.add_argument("run_dir", help="a `metarobust train` run directory")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="test dataset (default: the run's)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder or cache (default: the run's, else $METAROBUST_DATA)")
    p.add_argument("--split", default=None,
                   help="test split (default: evaluation for omniglot, test for glyphs)")
    p.add_argument("--ways", type=int, default=None,
                   help="classes per test episode (default: the run's test ways)")
    p.add_argument("--shots", type=int, default=None,
                   help="support items per class (default: the run's test shots)")
    p.add_argument("--queries", type=int, default=None,
                   help="query items per class (default: the run's test queries)")
    p.add_argument("--episodes", type=int, default=episodes, help="test episodes (tasks)")
    p.add_argument("--inner-steps", type=int, default=None,
                   help="MAML test-time steps (default: the run's test inner steps)")
    p.add_argument("--prototype", default=None, help=PROTOTYPE_HELP)
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: cuda when torch sees a GPU, else cpu")
    p.add_argument("--seed", type=int, default=1234, help="evaluation episode seed")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best.pt (best validation score; the final model of a run without "
                        "validation) or last.pt (the latest state, also after Ctrl-C)")


def given(args: argparse.Namespace, name: str, default: Any) -> Any:
    """The option ``name`` if set, else ``default``."""
    value = getattr(args, name)
    return default if value is None else value


def load_test_run(args: argparse.Namespace) -> Any:
    """The run's learner with ``--prototype`` and ``--inner-steps`` applied (its config is
    ``learner.config``); the run's thread count set."""
    import torch

    from ..train import load_run

    for name in ("ways", "shots", "queries"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(args, name)}")
    if args.inner_steps is not None and args.inner_steps < 0:
        raise ValueError(f"inner_steps: must be >= 0, got {args.inner_steps}")
    learner = load_run(args.run_dir, args.checkpoint)
    set_test_prototype(learner, args.prototype)
    if learner.config.threads is not None:
        torch.set_num_threads(learner.config.threads)
    if args.inner_steps is not None:
        if not hasattr(learner, "test_inner_steps"):
            raise ValueError(f"inner_steps: only MAML-family runs have an inner loop; this "
                             f"run's learner is {type(learner).__name__}")
        learner.test_inner_steps = args.inner_steps
    return learner


def test_sampler(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any, str | None]:
    """``(sampler, cfg, split)``: uint8 test episodes of the run's config ``cfg`` with
    ``--dataset``/``--data-root``/``--split`` and the episode shape options applied."""
    from ..episodes import EpisodeSampler
    from ..train import load_dataset

    if args.dataset is not None or args.data_root is not None:
        cfg = dataclasses.replace(cfg, dataset=args.dataset or cfg.dataset,
                                  data_root=args.data_root or cfg.data_root)
    split = eval_split(cfg.dataset, args.split, cfg.data_root)
    ds = load_dataset(cfg, split, "test")
    sampler = EpisodeSampler(ds, ways=given(args, "ways", cfg.test_ways),
                             shots=given(args, "shots", cfg.test_shots),
                             queries=given(args, "queries", cfg.test_queries), seed=args.seed,
                             dtype="uint8")
    return sampler, cfg, split
