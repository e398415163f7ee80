"""``metarobust train``: meta-train a learner into a run directory (resumes a run there;
a finished run is left as it is)."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from typing import Any

from ..config import COMPILE_MODES, DATASETS, DEVICES, LEARNERS, TrainConfig

FLAGS = {
    # flag: (type, help); all default to None so a --config file's values survive; the help
    # shows the config's default (DEFAULT_TEXT where a number reads better as a fraction)
    "learner": (str, f"one of {', '.join(LEARNERS)} (matching: Matching Networks; "
                     "relation: Relation Networks; r2d2: ridge-regression head; metaoptnet: "
                     "SVM head; protomaml: MAML with a prototype-initialised head, first "
                     "order; reptile: Reptile, give it --inner-steps, 5 in its paper; "
                     "simpleshot, baseline_pp (Baseline++), tim (TIM-GD): a backbone "
                     "pre-trained as a classifier; meta_baseline: that, then a cosine "
                     "prototype meta stage)"),
    "dataset": (str, f"one of {', '.join(DATASETS)}"),
    "data_root": (str, "dataset folder (omniglot: the folder holding omniglot-py/ or it; a "
                       "cache from `metarobust data prepare`, or a folder of caches named by "
                       "split, is read as a cache; default $METAROBUST_DATA)"),
    "split": (str, "training split (omniglot: background | evaluation | a split file; "
                   "default: background for omniglot, train for glyphs)"),
    "val_split": (str, "validation split (default: val for glyphs, else no validation)"),
    "model": (str, "backbone: conv4_snell | conv4_snell_ceil | conv4_finn | conv4_mini | "
                   "conv4_sung | resnet12 (default: conv4_snell_ceil for ProtoNet on "
                   "Omniglot, conv4_snell for other ProtoNets and for matching, r2d2, "
                   "metaoptnet and the transfer baselines; conv4_sung for relation; "
                   "conv4_finn for MAML, protomaml, reptile), or your own as "
                   "module.path:factory, called with in_channels and image_size if it "
                   "takes them and returning an nn.Module"),
    "ways": (int, "classes per training episode"),
    "shots": (int, "support items per class"),
    "queries": (int, "query items per class"),
    "test_ways": (int, "validation ways (default: --ways)"),
    "test_shots": (int, "validation shots (default: --shots)"),
    "test_queries": (int, "validation queries (default: 15; sinusoid: --queries)"),
    "meta_batch": (int, "tasks per step (default: 1 for ProtoNet and the other learners "
                        "without an inner loop, 32 for MAML, 5 for reptile, 25 for "
                        "sinusoid)"),
    "pretrain_share": (float, "share of the budget spent pre-training the backbone as a "
                              "classifier of all training classes, before episodic "
                              "training (default: 1 for simpleshot, baseline_pp, tim; 0.5 "
                              "for meta_baseline; else 0; learners without an inner loop)"),
    "batch_size": (int, "images per pre-training step"),
    "inner_steps": (int, "inner steps (MAML family, protomaml, reptile)"),
    "inner_lr": (float, "inner learning rate (MAML family, protomaml, reptile: SGD)"),
    "test_inner_steps": (int, "MAML inner steps at evaluation (default: --inner-steps)"),
    "metric": (str, "ProtoNet metric: sqeuclidean | cosine"),
    "prototype": (str, "ProtoNet prototypes: mean | median | trimmed_mean | geometric_median | "
                          "filtered_mean"),
    "lr": (float, "meta learning rate (Adam; default: 1e-3, 3e-3 for sinusoid, 6e-3 for "
                  "ProtoNet on Omniglot; reptile: its interpolation step, plain SGD, "
                  "default 1.0)"),
    "schedule": (str, "cosine | linear | step | constant (default: linear for ProtoNet on "
                      "Omniglot and for reptile, else cosine)"),
    "steps": (int, "training length in steps: outer optimiser updates, each on one "
                   "meta-batch of --meta-batch tasks"),
    "episodes": (int, "or in episodes: tasks seen, rounded up to whole meta-batches (the run "
                      "takes ceil(episodes / meta_batch) steps); with --steps, both must give "
                      "the same number of steps"),
    "minutes": (float, "or a time budget in minutes of training (with --steps or --episodes: "
                       "whichever is reached first)"),
    "val_every": (int, "steps between validations"),
    "val_episodes": (int, "episodes per validation"),
    "image_size": (int, "image side in pixels (default: glyphs and omniglot 28, folder 84; "
                        "caches and idx as stored)"),
    "glyph_classes": (int, "glyphs: training classes"),
    "checkpoint_every": (int, "steps between resumable checkpoints"),
    "chunk_size": (int, "tasks per forward/backward chunk (default: the whole meta-batch)"),
    "log_every": (int, "steps between training lines in metrics.jsonl (and TensorBoard)"),
    "device": (str, f"one of {', '.join(DEVICES)}"),
    "compile_mode": (str, "with --compile: torch.compile's mode, one of "
                          f"{', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs)"),
    "threads": (int, "torch CPU threads (default: torch's; sinusoid: 1)"),
    "seed": (int, "random seed"),
    "adv_eps": (float, "adversarial querying: attack radius"),
    "adv_steps": (int, "adversarial querying: PGD steps"),
    "adv_step_size": (float, "adversarial querying: PGD step size"),
    "adv_norm": (str, "adversarial querying: linf | l2"),
    "adv_method": (str, "with --adversarial, the robust objective: aq (adversarial querying) | "
                        "trades (clean loss + beta * KL to PGD queries; R-MAML) | adml "
                        "(adversarial queries and adversarial support; twice aq's cost)"),
    "trades_beta": (float, "with --adv-method trades: weight of the KL term"),
    "augment": (str, "corruption augmentation: corruption names, comma-separated, or 'all' "
                     "(see metarobust.robust.corruptions)"),
    "augment_severity": (int, "augmentation severities 1..this"),
    "augment_prob": (float, "share of training episodes augmented"),
    "noise_train": (float, "Gaussian noise of this standard deviation on the training "
                           "images (support and queries), for randomized smoothing "
                           "(`metarobust certify --sigma`)"),
}
DEFAULT_TEXT = {"adv_eps": "8/255", "adv_step_size": "2/255"}
# store_true / --x/--no-x flags: (config field, value when absent)
SWITCHES = {"rotations": None, "channels_last": None, "bf16": False, "compile": False,
            "adversarial": False, "adv_inner": False, "tensorboard": False}
BUDGETS = ("steps", "episodes", "minutes")
# validation options that follow a training option when not set
FOLLOWS = {"test_ways": "ways", "test_shots": "shots", "test_inner_steps": "inner_steps"}
DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def _help(name: str, text: str) -> str:
    default = DEFAULTS[name]
    if default is None or "(default: " in text:
        return text
    return f"{text} (default: {DEFAULT_TEXT.get(name, default)})"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help="meta-train a learner into a run directory",
                       description="Meta-train a learner into a run directory (--out). Give "
                       "the training length as --steps, --episodes or --minutes.\nRerun the "
                       "same command to resume a stopped run; a finished run is left as it "
                       "is.\nOptions override the values of a --config file.")
    for name, (typ, text) in FLAGS.items():
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       help=_help(name, text))
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
    t.add_argument("--adv-inner", action="store_true",
                   help="with --adv-method trades, MAML family: the TRADES term on PGD "
                        "support copies in the inner loop too (default: the outer loop only)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write the metrics as TensorBoard event files in "
                        "RUN_DIR/tensorboard (needs the tensorboard package: pip install "
                        "'metarobust[tensorboard]')")
    t.add_argument("--config", default=None, help="a TOML config (flags override it)")
    t.add_argument("--out", required=True, help="run directory (resumes if it holds a run)")
    t.set_defaults(func=run)
    return t


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the command line sets (a flag left out keeps the config's value)."""
    out = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    out.update({k: getattr(args, k) for k, absent in SWITCHES.items()
                if getattr(args, k) != absent})
    # a budget on the command line replaces the config's budgets
    if any(k in out for k in BUDGETS):
        out.update({k: out.get(k) for k in BUDGETS})
    return out


def _origin(name: str, given: dict[str, Any], file: TrainConfig, path: str | None) -> str:
    """Where the value of config field ``name`` comes from, in the user's words."""
    flag = "--" + name.replace("_", "-")
    if name in given:
        return f"{flag} {given[name]}" if name not in SWITCHES else flag
    value = getattr(file, name)
    if path is not None and value != DEFAULTS[name]:
        return f"{name} = {value!r} in {path}"
    if name in FOLLOWS and value is None:
        return f"{name} not set ({flag}), so {_origin(FOLLOWS[name], given, file, path)}"
    if name == "test_queries" and value is None:
        return f"{name} not set ({flag}), so 15"
    return f"{name} {value!r}, the default"


def explain(error: Exception, given: dict[str, Any], file: TrainConfig,
            path: str | None) -> Exception:
    """``error`` (its message names config fields before the first colon) with the options
    that set those fields: on the command line, in the config file, or by default."""
    head, colon, _ = str(error).partition(":")
    names = [n for n in dict.fromkeys(re.findall(r"[a-z_]+", head)) if n in DEFAULTS]
    if not colon or not names:
        return error
    where = "; ".join(_origin(n, given, file, path) for n in names)
    return (TypeError if isinstance(error, TypeError) else ValueError)(f"{error} [{where}]")


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..train import Trainer

    file = TrainConfig.load(args.config) if args.config else TrainConfig()
    given = overrides(args)
    cfg = TrainConfig.from_dict({**file.to_dict(), **given}, source="arguments")
    try:  # under torchrun with several processes, Trainer joins the process group
        try:
            trainer = Trainer(cfg, args.out)
            result = trainer.fit()
        except (ValueError, TypeError) as e:
            raise explain(e, given, file, args.config) from None
        if distributed.is_main():
            if trainer.already_finished:
                best = {k: v for k, v in result.items() if k.startswith("best_")}
                print(f"{args.out}: this run already finished at step {result['steps']} "
                      f"({result['episodes']} episodes; "
                      + ", ".join(f"{k} {v}" for k, v in best.items())
                      + "); nothing to do")
            print(json.dumps({"run": str(args.out), **result}))
    finally:
        distributed.teardown()
    return 0
