"""``metarobust train``: meta-train a learner into a run directory (resumes a run there)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import COMPILE_MODES, DATASETS, DEVICES, LEARNERS

FLAGS = {
    # flag: (type, help); all default to None so a --config file's values survive
    "learner": (str, f"one of {', '.join(LEARNERS)}"),
    "dataset": (str, f"one of {', '.join(DATASETS)}"),
    "data_root": (str, "dataset folder (omniglot: the folder holding omniglot-py/ or it; a "
                       "cache from `metarobust data prepare`, or a folder of caches named by "
                       "split, is read as a cache; default $METAROBUST_DATA)"),
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
    "image_size": (int, "image side in pixels (default: glyphs and omniglot 28, folder 84; "
                        "caches and idx as stored)"),
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
# store_true / --x/--no-x flags: (config field, value when absent)
SWITCHES = {"rotations": None, "channels_last": None, "bf16": False, "compile": False,
            "adversarial": False}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help="meta-train a learner into a run directory")
    for name, (typ, text) in FLAGS.items():
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
    t.set_defaults(func=run)
    return t


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the command line sets (a flag left out keeps the config's value)."""
    out = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    out.update({k: getattr(args, k) for k, absent in SWITCHES.items()
                if getattr(args, k) != absent})
    # a budget on the command line replaces the config's other budget
    if "episodes" in out and "minutes" not in out:
        out["minutes"] = None
    if "minutes" in out and "episodes" not in out:
        out["episodes"] = None
    return out


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..config import TrainConfig
    from ..train import Trainer

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **overrides(args)}, source="arguments")
    try:  # under torchrun with several processes, Trainer joins the process group
        result = Trainer(cfg, args.out).fit()
        if distributed.is_main():
            print(json.dumps({"run": str(args.out), **result}))
    finally:
        distributed.teardown()
    return 0
