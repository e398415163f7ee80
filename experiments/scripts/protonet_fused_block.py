"""ProtoNet training steps with the first Conv-4 block fused in Rust against the same steps
through torch's block, side by side in one process (the target setting of the 10-minute
CPU run: Omniglot background, 20-way 1-shot 5-query, channels-last, Adam 6e-3).

    METAROBUST_DATA=/path/to/data python experiments/scripts/protonet_fused_block.py [--steps 250]
        [--rounds 2]

Prints ms per step of each (best of ``--rounds`` alternating runs of ``--steps`` steps, the
trainer's own loop with its episode prefetch) and their ratio. Without METAROBUST_DATA the
embedded glyphs stand in for Omniglot.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from metarobust.config import TrainConfig
from metarobust.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    root = os.environ.get("METAROBUST_DATA")
    data = (dict(dataset="omniglot", data_root=root, split="background") if root
            else dict(dataset="glyphs"))
    best: dict[bool, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for fused in (True, False):
                cfg = TrainConfig(learner="protonet", ways=20, shots=1, queries=5,
                                  episodes=args.steps, device="cpu", **data)
                trainer = Trainer(cfg, os.path.join(tmp, f"{fused}-{r}"), progress=False)
                trainer.learner.backbone.fuse_first_block = fused
                t = time.perf_counter()
                trainer.fit()
                ms = (time.perf_counter() - t) / args.steps * 1e3
                best[fused] = min(best.get(fused, ms), ms)
                print(f"round {r}: {'fused' if fused else 'torch'} {ms:.1f} ms/step", flush=True)
    print(f"fused {best[True]:.1f} ms/step, torch {best[False]:.1f} ms/step: "
          f"{best[True] / best[False]:.2f}x")


if __name__ == "__main__":
    main()
