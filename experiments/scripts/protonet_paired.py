"""Fixed-step recipe trials, compared on the same test episodes.

Trains the 10-minute target's setting (ProtoNet, 20-way 1-shot 5-query on Omniglot
background, with the current defaults) for a fixed number of steps, so the machine's speed
does not enter, with any ``TrainConfig`` fields overridden (``learner=maml ways=5
queries=15`` trains second-order MAML with its defaults, meta-batch 32: ``--steps`` counts
meta-batches); then scores every episode of the same test set
(Omniglot evaluation, 5-way 1-shot 15-query, seed 0; ``--test-split``, ``--test-ways``) and
saves the per-episode accuracies.
``--compare`` prints paired differences with their 95% CI, which are far tighter than two
separate intervals (the episodes' difficulty cancels).

    METAROBUST_DATA=DATA python experiments/scripts/protonet_paired.py --out trials/ceil \
        model=conv4_snell_ceil schedule=linear
    METAROBUST_DATA=DATA python experiments/scripts/protonet_paired.py --out trials/floor \
        model=conv4_snell schedule=cosine
    python experiments/scripts/protonet_paired.py --compare trials/floor trials/ceil
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
from pathlib import Path

import torch

from metarobust._runtime import retain_freed_memory
from metarobust.config import TrainConfig
from metarobust.episodes import EpisodeSampler
from metarobust.evaluate import mean_ci95
from metarobust.train import Trainer, load_dataset


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if not sep or key not in known:
        raise SystemExit(f"override {text!r}: expected FIELD=VALUE with FIELD one of "
                         f"{', '.join(known)}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def trial(args: argparse.Namespace) -> None:
    retain_freed_memory()
    base = dict(learner="protonet", dataset="omniglot", data_root=args.data_root,
                split="background", ways=20, shots=1, queries=5, device="cpu")
    cfg = TrainConfig(**{**base, **dict(map(parse_override, args.overrides))}).resolved()
    cfg = dataclasses.replace(cfg, episodes=args.steps * cfg.meta_batch)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, run, progress=False)
        trainer.fit()
    ds = load_dataset(trainer.cfg, args.test_split, "test")
    sampler = EpisodeSampler(ds, ways=args.test_ways, shots=1, queries=15, seed=0,
                             dtype="uint8")
    learner = trainer.learner.eval()
    accs = []
    with torch.no_grad(), sampler.batches(10, num_batches=math.ceil(args.episodes / 10)) as it:
        for batch in it:
            accs.append(learner.evaluate_batch(batch, args.test_ways).float())
    acc = torch.cat(accs)[:args.episodes]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"accuracy": acc, "config": trainer.cfg.to_dict()}, out.with_suffix(".pt"))
    mean, ci = mean_ci95(acc)
    print(f"{out}: {args.steps} steps in {trainer.elapsed:.0f} s, {100 * mean:.2f}% ± "
          f"{100 * ci:.2f}% ({len(acc)} episodes)")


def compare(paths: list[str]) -> None:
    base = torch.load(Path(paths[0]).with_suffix(".pt"))["accuracy"].double()
    for path in paths[1:]:
        other = torch.load(Path(path).with_suffix(".pt"))["accuracy"].double()
        if other.shape != base.shape:
            raise SystemExit(f"{path}: {len(other)} episodes, {paths[0]}: {len(base)}")
        diff, ci = mean_ci95(other - base)
        print(f"{path} - {paths[0]}: {100 * other.mean():.2f}% - {100 * base.mean():.2f}% = "
              f"{100 * diff:+.2f} ± {100 * ci:.2f} points (paired, 95% CI)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="TrainConfig fields, FIELD=VALUE")
    p.add_argument("--out", help="where the per-episode accuracies go (OUT.pt)")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--episodes", type=int, default=3000, help="test episodes")
    p.add_argument("--test-split", default="evaluation",
                   help="test classes: an Omniglot set or split file (default evaluation)")
    p.add_argument("--test-ways", type=int, default=5, help="test episodes' ways (1-shot)")
    p.add_argument("--data-root", default=os.environ.get("METAROBUST_DATA"))
    p.add_argument("--compare", nargs="+", metavar="OUT",
                   help="paired differences of trials against the first one")
    args = p.parse_args()
    if args.compare:
        if len(args.compare) < 2:
            raise SystemExit("--compare: give a baseline and at least one trial")
        compare(args.compare)
        return
    if not args.out or not args.data_root:
        raise SystemExit("--out and --data-root (or METAROBUST_DATA) are needed for a trial")
    trial(args)


if __name__ == "__main__":
    main()
