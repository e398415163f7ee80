"""ProtoNet training episodes/s (one episode per step) with each speed flag on and off:
channels_last, bf16 autocast and torch.compile of the backbone in the modes
``--compile`` names, side by side in one process.

    python benches/protonet_flags.py --device cuda [--data-root DATA] [--ways 60 --shots 5]
        [--model resnet12 --image-size 84]

Each candidate trains the same episodes (Omniglot background when ``--data-root`` holds
it, else the embedded glyphs) with a fresh learner: ``--warmup`` steps, then ``--steps``
timed ones; the candidates take turns over ``--rounds`` rounds and the best round counts.
The last column is the training loss after the timed steps, a check that a flag did not
break training.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from metarobust._runtime import retain_freed_memory
from metarobust.config import TrainConfig
from metarobust.train import Trainer


def candidates(compile_modes: list[str]) -> list[dict]:
    cands: list[dict] = [dict(channels_last=cl, bf16=b)
                         for cl, b in itertools.product((False, True), (False, True))]
    # compiled: with channels_last (the ProtoNet default), one candidate per mode
    cands += [dict(channels_last=True, bf16=False, compile=True, compile_mode=mode)
              for mode in compile_modes]
    return cands


def timed_fit(cfg: TrainConfig, warmup: int, steps: int,
              around: Callable[[], AbstractContextManager] = nullcontext
              ) -> tuple[float, dict]:
    """Trains ``cfg`` (in a scratch run directory) for ``warmup`` steps, then ``steps`` more
    inside ``around()``; returns the seconds per timed step and the last step's results.
    No validation or checkpoint falls in the timed steps; the trainer's clock counts the
    steps only, up to the end of the last one on the GPU."""
    out = tempfile.mkdtemp()
    try:
        episodes = (warmup + steps + 1) * cfg.resolved().meta_batch
        cfg = TrainConfig(**{**cfg.to_dict(), "episodes": episodes, "minutes": None,
                             "val_every": 10**9, "checkpoint_every": 10**9})
        trainer = Trainer(cfg, out, progress=False)
        trainer.fit(stop_at=warmup)
        elapsed = trainer.elapsed
        with around():
            last = trainer.fit(stop_at=warmup + steps)
        return (trainer.elapsed - elapsed) / steps, last
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(base: TrainConfig, flags: dict, warmup: int, steps: int) -> tuple[float, float]:
    """Episodes/s and the final loss of ``base`` with ``flags``."""
    step_s, last = timed_fit(TrainConfig(**{**base.to_dict(), **flags}), warmup, steps)
    return 1 / step_s, float(last["loss"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--model", default=None,
                   help="backbone (default: the config's for Omniglot ProtoNet, conv4_snell_ceil)")
    p.add_argument("--image-size", type=int, default=None,
                   help="side the images are resized to (default: the config's, 28)")
    p.add_argument("--ways", type=int, default=60)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--compile", default="", metavar="MODES",
                   help="torch.compile candidates, one per mode, comma-separated (e.g. "
                        "default,reduce-overhead); their compilation falls in --warmup")
    args = p.parse_args()
    retain_freed_memory()  # as `metarobust train` does
    dataset = dict(dataset="omniglot", data_root=args.data_root) if args.data_root \
        else dict(dataset="glyphs")
    model = {k: v for k, v in (("model", args.model), ("image_size", args.image_size))
             if v is not None}
    base = TrainConfig(learner="protonet", ways=args.ways, shots=args.shots,
                       queries=args.queries, device=args.device, episodes=1, **model,
                       **dataset)
    cands = candidates([m for m in args.compile.split(",") if m])
    best: dict[int, tuple[float, float]] = {}
    failed: dict[int, str] = {}
    for _ in range(args.rounds):
        for i, flags in enumerate(cands):
            if i in failed:
                continue
            try:
                rate, loss = run(base, flags, args.warmup, args.steps)
            except Exception as e:  # a flag this torch or device cannot do: say so, go on
                failed[i] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
                continue
            if i not in best or rate > best[i][0]:
                best[i] = (rate, loss)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"ProtoNet {base.resolved().model} at {base.image_size}x{base.image_size}, "
          f"{args.ways}-way {args.shots}-shot {args.queries}-query on {base.dataset}, "
          f"{name}: best of {args.rounds} rounds of {args.steps} steps")
    print(f"{'channels_last':>13}  {'bf16':>5}  {'compile':>15}  {'episodes/s':>10}  "
          f"{'vs plain':>8}  {'loss':>6}")
    plain = best[0][0] if 0 in best else float("nan")
    for i, flags in enumerate(cands):
        mode = flags.get("compile_mode", "-")
        head = f"{str(flags['channels_last']):>13}  {str(flags['bf16']):>5}  {mode:>15}"
        if i in failed:
            print(f"{head}  failed: {failed[i]}")
            continue
        rate, loss = best[i]
        print(f"{head}  {rate:10.1f}  {rate / plain:7.2f}x  {loss:6.3f}")


if __name__ == "__main__":
    main()
