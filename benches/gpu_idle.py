"""GPU idle time per training step: how much of each step the GPU spends without work,
and how long the host waits for the sampler's next episode batch.

    python benches/gpu_idle.py --device cuda [--data-root DATA] [--steps 200]

Two settings, each trained with `metarobust train`'s own loop (pinned uint8 batches from
the prefetching Rust sampler, non-blocking copies, normalised on the GPU): ProtoNet
60-way 5-shot 5-query and second-order MAML 5-way 1-shot 15-query with meta-batch 32,
on Omniglot background when ``--data-root`` holds it, else on the embedded glyphs.

After ``--warmup`` steps, ``--steps`` steps run under ``torch.profiler``; the GPU's busy
time is the union of the intervals of its kernels and copies. Idle per step is the step
time minus that busy time: it counts every gap (Python and launch overhead, the wait for
input), and the profiler's own overhead enlarges it, so it is an upper bound. The input
wait is the time spent inside the batch iterator's ``__next__``, the part of the idle time
that the sampler's prefetch is there to remove.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch
from protonet_flags import timed_fit  # benches/, the script's folder

from metarobust import episodes
from metarobust._runtime import retain_freed_memory
from metarobust.config import TrainConfig

SETTINGS = {
    "protonet 60w5s5q": dict(learner="protonet", ways=60, shots=5, queries=5),
    "maml 5w1s15q x32": dict(learner="maml", ways=5, shots=1, queries=15, meta_batch=32,
                             model="conv4_finn", inner_lr=0.4),
}


class InputWait:
    """Adds up the time spent in ``BatchIterator.__next__`` while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig = episodes.BatchIterator.__next__

    def __enter__(self) -> InputWait:
        orig = self._orig

        def timed_next(it):
            t0 = time.perf_counter()
            try:
                return orig(it)
            finally:
                self.seconds += time.perf_counter() - t0

        episodes.BatchIterator.__next__ = timed_next
        return self

    def __exit__(self, *exc) -> None:
        episodes.BatchIterator.__next__ = self._orig


def busy_seconds(prof: torch.profiler.profile) -> float:
    """Union of the GPU activity intervals (kernels, copies, sets) in a profile."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    total, end = 0.0, float("-inf")
    for s, e in spans:
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total / 1e6


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict[str, float]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if cfg.device == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    wait, prof = InputWait(), torch.profiler.profile(activities=acts)

    @contextmanager
    def profiled():
        with wait, prof:
            yield

    step_s, _ = timed_fit(cfg, warmup, steps, profiled)
    busy = busy_seconds(prof) / steps if cfg.device == "cuda" else float("nan")
    return dict(step_ms=1e3 * step_s, busy_ms=1e3 * busy, idle_ms=1e3 * (step_s - busy),
                wait_ms=1e3 * wait.seconds / steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--learners", default="protonet,maml",
                   help="comma-separated: protonet, maml (default both)")
    args = p.parse_args()
    wanted = set(args.learners.split(","))
    if not wanted <= {"protonet", "maml"}:
        p.error(f"--learners: expected protonet and/or maml, got {args.learners!r}")
    retain_freed_memory()  # as `metarobust train` does
    data = dict(dataset="omniglot", data_root=args.data_root) if args.data_root \
        else dict(dataset="glyphs")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"GPU idle time per training step on {data['dataset']}, {name}: {args.steps} "
          f"profiled steps after {args.warmup}")
    print(f"{'setting':<18} {'step ms':>8} {'GPU busy':>9} {'idle':>7} {'idle %':>7} "
          f"{'input wait':>10}")
    for label, setting in SETTINGS.items():
        if setting["learner"] not in wanted:
            continue
        cfg = TrainConfig(**setting, **data, device=args.device, episodes=1)
        r = measure(cfg, args.warmup, args.steps)
        print(f"{label:<18} {r['step_ms']:8.2f} {r['busy_ms']:9.2f} {r['idle_ms']:7.2f} "
              f"{100 * r['idle_ms'] / r['step_ms']:6.1f}% {r['wait_ms']:10.3f}")


if __name__ == "__main__":
    main()
