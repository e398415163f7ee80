"""The ``metarobust`` command line.

::

    metarobust quickstart                  # the main job on the embedded glyphs
    metarobust train --learner protonet --dataset glyphs --ways 20 --shots 1 --queries 5 \
        --episodes 20000 --out runs/proto
    metarobust eval runs/proto --ways 5 --shots 1 --episodes 600   # last line: JSON
    metarobust robustness runs/proto --suite quick   # robustness.json, .csv, .png in the run
    metarobust data prepare omniglot --root R --split background --out CACHE
    metarobust bench sampler|kernels|maml|all   # side-by-side ratios against references
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__, distributed
from ._runtime import retain_freed_memory
from .bench import add_bench_parser
from .config import COMPILE_MODES, DATASETS, DEVICES, LEARNERS, TrainConfig
from .data.prepare import add_data_parser
from .distributed import DistributedError
from .learners.protonet import PROTOTYPE_HELP, set_test_prototype
from .robust.suite import add_robustness_parser

TRAIN_FLAGS = {
    # flag: (type, help); all default to None so a --config file's values survive
    "learner": (str, f"one of {', '.join(LEARNERS)}"),
    "dataset": (str, f"one of {', '.join(DATASETS)}"),
    "data_root": (str, "dataset folder (omniglot: the folder holding omniglot-py/ or it)"),
    "split": (str, "training split (omniglot: background | evaluation | a split file)"),
    "val_split": (str, "validation split (glyphs: val by default)"),
    "model": (str, "backbone: conv4_snell | conv4_snell_ceil | conv4_finn | conv4_mini | "
                   "resnet12 (default: conv4_snell_ceil for ProtoNet on Omniglot, "
                   "conv4_snell for other ProtoNets, conv4_finn for MAML)"),
    "ways": (int, "classes per training episode"),
    "shots": (int, "support items per class"),
    "queries": (int, "query items per class"),
    "test_ways": (int, "validation ways"),
    "test_shots": (int, "validation shots"),
    "test_queries": (int, "validation queries"),
    "meta_batch": (int, "tasks per step (default 1 ProtoNet, 32 MAML)"),
    "inner_steps": (int, "MAML inner steps"),
    "inner_lr": (float, "MAML inner learning rate"),
    "test_inner_steps": (int, "MAML inner steps at evaluation"),
    "metric": (str, "ProtoNet metric: sqeuclidean | cosine"),
    "prototype": (str, "ProtoNet prototypes: mean | median | trimmed_mean | geometric_median | "
                          "filtered_mean"),
    "lr": (float, "meta learning rate (Adam; default 1e-3, 3e-3 for sinusoid, 6e-3 for "
                  "ProtoNet on Omniglot)"),
    "schedule": (str, "cosine | linear | step | constant (default: linear for ProtoNet on "
                      "Omniglot, else cosine)"),
    "episodes": (int, "training episodes in all"),
    "minutes": (float, "or a time budget"),
    "val_every": (int, "steps between validations"),
    "val_episodes": (int, "episodes per validation"),
    "image_size": (int, "image side in pixels"),
    "glyph_classes": (int, "glyphs: training classes"),
    "checkpoint_every": (int, "steps between resumable checkpoints"),
    "chunk_size": (int, "tasks per forward/backward chunk"),
    "device": (str, f"one of {', '.join(DEVICES)}"),
    "compile_mode": (str, "with --compile: torch.compile's mode, one of "
                          f"{', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs)"),
    "threads": (int, "torch CPU threads (default: torch's; sinusoid: 1)"),
    "seed": (int, "random seed"),
    "adv_eps": (float, "adversarial querying: attack radius (default 8/255)"),
    "adv_steps": (int, "adversarial querying: PGD steps (default 7)"),
    "adv_step_size": (float, "adversarial querying: PGD step size (default 2/255)"),
    "adv_norm": (str, "adversarial querying: linf | l2"),
    "augment": (str, "corruption augmentation: corruption names, comma-separated, or 'all' "
                     "(see metarobust.robust.corruptions)"),
    "augment_severity": (int, "augmentation severities 1..this (default 3)"),
    "augment_prob": (float, "share of training episodes augmented (default 0.5)"),
}


def train(args: argparse.Namespace) -> int:
    from .train import Trainer

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if args.rotations is not None:
        overrides["rotations"] = args.rotations
    if args.channels_last is not None:
        overrides["channels_last"] = args.channels_last
    if args.bf16:
        overrides["bf16"] = True
    if args.compile:
        overrides["compile"] = True
    if args.adversarial:
        overrides["adversarial"] = True
    if "episodes" in overrides and "minutes" not in overrides:
        overrides["minutes"] = None
    if "minutes" in overrides and "episodes" not in overrides:
        overrides["episodes"] = None
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **overrides}, source="arguments")
    try:  # under torchrun with several processes, Trainer joins the process group
        result = Trainer(cfg, args.out).fit()
        if distributed.is_main():
            print(json.dumps({"run": str(args.out), **result}))
    finally:
        distributed.teardown()
    return 0


def evaluate_run(args: argparse.Namespace) -> int:
    from .episodes import EpisodeSampler
    from .evaluate import evaluate
    from .train import load_dataset, load_run, resolve_device

    for name in ("ways", "shots", "queries"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(args, name)}")
    if args.inner_steps is not None and args.inner_steps < 0:
        raise ValueError(f"inner_steps: must be >= 0, got {args.inner_steps}")
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
        return _evaluate_regression_run(args, learner, cfg)
    if args.dataset is not None or args.data_root is not None:
        cfg = dataclasses.replace(cfg, dataset=args.dataset or cfg.dataset,
                                  data_root=args.data_root or cfg.data_root)
    split = args.split or {"glyphs": "test", "omniglot": "evaluation"}.get(cfg.dataset)
    ds = load_dataset(cfg, split, "test")
    ways = args.ways if args.ways is not None else cfg.test_ways
    shots = args.shots if args.shots is not None else cfg.test_shots
    queries = args.queries if args.queries is not None else cfg.test_queries
    if args.inner_steps is not None:
        if not hasattr(learner, "test_inner_steps"):
            raise ValueError(f"inner_steps: only MAML-family runs have an inner loop; this "
                             f"run's learner is {type(learner).__name__}")
        learner.test_inner_steps = args.inner_steps
    device = resolve_device(args.device)
    sampler = EpisodeSampler(ds, ways=ways, shots=shots, queries=queries, seed=args.seed,
                             dtype="uint8")
    res = evaluate(learner.to(device), sampler, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset=cfg.dataset, split=split)
    print(f"{cfg.learner} on {cfg.dataset}/{split}: {ways}-way {shots}-shot, "
          f"accuracy {100 * res['accuracy']:.2f}% ± {100 * res['ci95']:.2f}% "
          f"(95% CI, {res['episodes']} episodes)")
    print(json.dumps(res))
    return 0


def _evaluate_regression_run(args: argparse.Namespace, learner, cfg) -> int:
    from .data import sinusoid
    from .evaluate import evaluate_regression
    from .train import resolve_device

    if args.inner_steps is not None:
        learner.test_inner_steps = args.inner_steps
    tasks = sinusoid(shots=args.shots if args.shots is not None else cfg.test_shots,
                     queries=args.queries if args.queries is not None
                     else (cfg.test_queries or 10),
                     seed=args.seed)
    device = resolve_device(args.device)
    res = evaluate_regression(learner.to(device), tasks, args.episodes, device=device)
    res.update(learner=cfg.learner, dataset="sinusoid")
    steps = ", ".join(f"{k} steps {v:.3f}" for k, v in res["mse_by_steps"].items())
    print(f"{cfg.learner} on sinusoid, {tasks.shots}-shot: query MSE {res['mse']:.3f} "
          f"± {res['ci95']:.3f} after {learner.test_inner_steps} steps ({steps}; "
          f"{res['episodes']} tasks)")
    print(json.dumps(res))
    return 0


def quickstart(args: argparse.Namespace) -> int:
    """Embedded glyphs: a raw-pixel baseline, then a ProtoNet and a first-order MAML trained
    briefly and evaluated on held-out glyph classes (mean accuracy ± 95% CI)."""
    import tempfile

    import metarobust as mr

    from .evaluate import evaluate, mean_ci95
    from .train import Trainer

    for name in ("ways", "shots", "episodes", "classes", "train_classes", "proto_episodes",
                 "maml_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(args, name)}")
    torch.manual_seed(args.seed)
    test = mr.data.glyphs(num_classes=args.classes, per_class=20, image_size=28,
                          seed=args.seed, split="test")
    sampler = mr.EpisodeSampler(test, ways=args.ways, shots=args.shots, queries=15,
                                seed=args.seed, dtype="uint8")
    flat = lambda x: x.flatten(2).float() / 255  # noqa: E731 - (B, n, C, H, W) -> (B, n, D)
    scores = []
    with sampler.batches(50, num_batches=-(-args.episodes // 50)) as batches:
        for b in batches:
            dist = mr.ops.prototype_distances(flat(b.support_x), b.support_y, flat(b.query_x),
                                              args.ways)
            scores.append((dist.argmin(-1) == b.query_y).double().mean(1))
    rows = [("raw pixels, prototypes (no training)", *mean_ci95(torch.cat(scores)[: args.episodes]),
             float("nan"))]
    runs = [("protonet", dict(ways=2 * args.ways, shots=args.shots, queries=5, meta_batch=1,
                              episodes=args.proto_episodes, lr=1e-3)),
            ("fomaml", dict(ways=args.ways, shots=args.shots, queries=5, meta_batch=4,
                            episodes=args.maml_episodes, lr=1e-3, inner_lr=0.4,
                            inner_steps=1, test_inner_steps=3))]
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in runs:
            cfg = TrainConfig(learner=name, dataset="glyphs", seed=args.seed,
                              glyph_classes=args.train_classes, val_every=10**9,
                              test_ways=args.ways, test_shots=args.shots, test_queries=15,
                              **kw)
            t0 = time.perf_counter()
            trainer = Trainer(cfg, f"{tmp}/{name}")
            trainer.fit()
            res = evaluate(trainer.learner, sampler, args.episodes, device=trainer.device)
            rows.append((f"{name}, {kw['episodes']} training episodes", res["accuracy"],
                         res["ci95"], time.perf_counter() - t0))
    print(f"\n{args.ways}-way {args.shots}-shot on {test.num_classes} held-out glyph classes, "
          f"{args.episodes} episodes each (chance {100 / args.ways:.0f}%):")
    print(f"  {'method':42s} {'accuracy':>9s} {'95% CI':>8s} {'train+eval':>11s}")
    for name, acc, ci, secs in rows:
        took = "-" if secs != secs else f"{secs:.1f}s"
        print(f"  {name:42s} {100 * acc:8.2f}% {100 * ci:7.2f}% {took:>11s}")
    return 0


def robustness(args: argparse.Namespace) -> int:
    """The robustness suite of a run (see metarobust.robust.suite)."""
    from .robust.suite import robustness_command
    from .train import load_dataset, load_run, resolve_device

    return robustness_command(args, load_run, load_dataset, resolve_device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarobust", description="Robust few-shot meta-learning (Rust core, PyTorch).")
    parser.add_argument("--version", action="version", version=f"metarobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    q = sub.add_parser("quickstart", help="the main job on the embedded glyph data")
    q.add_argument("--ways", type=int, default=5)
    q.add_argument("--shots", type=int, default=1)
    q.add_argument("--episodes", type=int, default=300, help="evaluation episodes")
    q.add_argument("--classes", type=int, default=200, help="held-out glyph classes")
    q.add_argument("--train-classes", type=int, default=1000)
    q.add_argument("--proto-episodes", type=int, default=300, help="ProtoNet training episodes")
    q.add_argument("--maml-episodes", type=int, default=600, help="FOMAML training tasks")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=quickstart)

    t = sub.add_parser("train", help="meta-train a learner into a run directory")
    for name, (typ, text) in TRAIN_FLAGS.items():
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       help=text)
    t.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=None,
                   help="Omniglot training: add rotated classes (default: on for the "
                        "background/evaluation splits)")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC convolutions (ProtoNet only; default: on)")
    t.add_argument("--bf16", action="store_true",
                   help="bf16 autocast of the training steps (CPU or CUDA)")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone for training (ProtoNet; the first steps "
                        "pay the compilation)")
    t.add_argument("--adversarial", action="store_true",
                   help="adversarial querying (Goldblum et al. 2020): train on PGD queries")
    t.add_argument("--config", default=None, help="a TOML config (flags override it)")
    t.add_argument("--out", required=True, help="run directory (resumes if it holds a run)")
    t.set_defaults(func=train)

    e = sub.add_parser("eval", help="evaluate a run: mean accuracy with a 95%% CI")
    e.add_argument("run_dir")
    e.add_argument("--dataset", choices=DATASETS, default=None)
    e.add_argument("--data-root", default=None)
    e.add_argument("--split", default=None)
    e.add_argument("--ways", type=int, default=None)
    e.add_argument("--shots", type=int, default=None)
    e.add_argument("--queries", type=int, default=None)
    e.add_argument("--episodes", type=int, default=600)
    e.add_argument("--inner-steps", type=int, default=None, help="MAML test-time steps")
    e.add_argument("--prototype", default=None, help=PROTOTYPE_HELP)
    e.add_argument("--device", choices=DEVICES, default="auto")
    e.add_argument("--seed", type=int, default=1234, help="evaluation episode seed")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best.pt (best validation score; the final model of a run without "
                        "validation) or last.pt (the latest state, also after Ctrl-C)")
    e.set_defaults(func=evaluate_run)

    add_data_parser(sub)
    add_bench_parser(sub)
    add_robustness_parser(sub).set_defaults(func=robustness)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    retain_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"metarobust: error: {e}", file=sys.stderr)
        return 2
    except DistributedError as e:  # another rank failed or stalled
        print(f"metarobust: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = ""
        if args.func is train and (Path(args.out) / "last.pt").is_file():
            where = (f"; the run's state is in {Path(args.out) / 'last.pt'} (rerun the same "
                     "command to resume)")
        print(f"metarobust: interrupted{where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
