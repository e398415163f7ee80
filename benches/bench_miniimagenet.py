"""Sampler throughput at miniImageNet's shape, and variable-way episodes against fixed ones,
every candidate in one process, reported as ratios.

    PYTHONPATH=python python benches/bench_miniimagenet.py [--batch 16] [--repeats 5]
        [--out benches/results/miniimagenet_cpu.txt]

Data: miniImageNet-shaped random pixels: 64 train classes x 600 images of 3 x 84 x 84,
uint8 (813 MB), as ``mr.data.mini_imagenet`` holds its train split.

Part 1, 5-way 5-shot 15-query batches of ``batch`` episodes, uint8 and float32 output
(the candidates of ``metarobust.bench.sampler`` and one more): ``rust``
(``EpisodeSampler.sample_batch``), ``numpy`` (vectorised NumPy draws and an ``np.take``
gather), ``easyfsl`` (the harness's ``dataloader``: a per-item ``Dataset`` + an episode
batch sampler + ``DataLoader`` with a collate function, as easyfsl's ``TaskSampler``
builds episodes), ``learn2learn`` (per task: items read one by one from a per-item
``Dataset`` returning ``(image, label)``, stacked per task, labels remapped, tasks stacked:
learn2learn's ``TaskDataset.sample`` loop) and ``memcpy`` (``np.copyto`` of the same bytes
into fresh outputs).

Part 2, cost per image: variable-way episodes (``VariableEpisodeSampler`` with
Meta-Dataset's constants, padded batches of ``var_batch`` episodes) against fixed 5-way
5-shot 15-query ones, each timed over a cycle of 8 batches; seconds per image = seconds per
cycle / images in the cycle (padding not counted as images, its zero-fill counted as time).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

import numpy as np
import torch

import metarobust as mr
from metarobust.bench.sampler import NumpyEpisodeSampler, sampler_candidates
from metarobust.bench.timing import measure

CLASSES, PER_CLASS, SHAPE = 64, 600, (3, 84, 84)
CYCLE = 8


def mini_imagenet_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (CLASSES * PER_CLASS, *SHAPE), dtype=np.uint8)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int64), PER_CLASS)
    return images, labels


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def learn2learn_style(images, labels, batch: int, dtype: str, seed: int = 0):
    """Per task, items one by one from a per-item dataset, stacked; tasks stacked."""
    ns = NumpyEpisodeSampler(images, labels, 5, 5, 15, seed, "uint8")
    to_float = dtype == "float32"

    def item(i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(images[i])
        return (x.float().div_(255) if to_float else x), int(labels[i])

    def call():
        _, sup, qry = ns.draw(batch)
        xs, ys = [], []
        for b in range(batch):
            data = [item(i) for i in np.concatenate([sup[b].ravel(), qry[b].ravel()])]
            x = torch.stack([d[0] for d in data])
            y = torch.tensor([d[1] for d in data])
            ys.append(torch.unique(y, return_inverse=True)[1])
            xs.append(x)
        return torch.stack(xs), torch.stack(ys)

    return call


def throughput(images, labels, batch: int, dtype: str, repeats: int,
               min_time: float) -> list[dict]:
    """5w5s15q batches per second of every candidate, and its ratio to ``rust``."""
    cands = sampler_candidates(images, labels, 5, 5, 15, batch, dtype)
    cands["easyfsl"] = cands.pop("dataloader")
    cands["learn2learn"] = learn2learn_style(images, labels, batch, dtype)
    times = measure(cands, repeats, min_time)
    best = {k: min(v) for k, v in times.items()}
    nbytes = batch * 100 * int(np.prod(SHAPE)) * (4 if dtype == "float32" else 1)
    return [{"dtype": dtype, "candidate": k, "ms/batch": best[k] * 1e3,
             "median ms": statistics.median(times[k]) * 1e3, "GB/s": nbytes / best[k] / 1e9,
             "rust speedup": best[k] / best["rust"]} for k in cands]


def variable_vs_fixed(images, labels, batch: int, var_batch: int, dtype: str,
                      repeats: int, min_time: float) -> dict:
    fixed = mr.EpisodeSampler((images, labels), ways=5, shots=5, queries=15, seed=0,
                              dtype=dtype)
    var = mr.VariableEpisodeSampler((images, labels), seed=0, dtype=dtype)
    fixed_images = CYCLE * batch * 5 * 20
    info = var.describe(0, CYCLE * var_batch)
    var_images = int(info[:, 2].sum() + info[:, 3].sum())
    padded = sum(int(info[k:k + var_batch, 2].max() + info[k:k + var_batch, 3].max())
                 * var_batch for k in range(0, CYCLE * var_batch, var_batch))

    def run_fixed():
        for k in range(CYCLE):
            fixed.sample_batch(k * batch, batch)

    def run_var():
        for k in range(CYCLE):
            var.sample_batch(k * var_batch, var_batch)

    times = measure({"fixed": run_fixed, "variable": run_var}, repeats, min_time)
    best = {k: min(v) for k, v in times.items()}
    per = {"fixed": best["fixed"] / fixed_images, "variable": best["variable"] / var_images}
    return {"dtype": dtype, "fixed us/img": per["fixed"] * 1e6,
            "variable us/img": per["variable"] * 1e6,
            "variable/fixed": per["variable"] / per["fixed"],
            "mean ways": float(info[:, 1].mean()),
            "mean support": float(info[:, 2].mean()), "mean query": float(info[:, 3].mean()),
            "padding %": 100 * (padded - var_images) / padded,
            "median variable/fixed": (statistics.median(times["variable"]) / var_images)
            / (statistics.median(times["fixed"]) / fixed_images)}


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = [lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)]
    cells = [[fmt[0](r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--var-batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    images, labels = mini_imagenet_like()
    rows = [r for d in ("uint8", "float32")
            for r in throughput(images, labels, a.batch, d, a.repeats, a.min_time)]
    var = [variable_vs_fixed(images, labels, a.batch, a.var_batch, d, a.repeats, a.min_time)
           for d in ("uint8", "float32")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = [
        "Sampler throughput at miniImageNet's shape (64 classes x 600 images, 3x84x84 uint8,",
        "random pixels), and variable-way episodes against fixed ones.",
        "",
        f"Command:  PYTHONPATH=python python benches/bench_miniimagenet.py "
        f"{' '.join(sys.argv[1:])}".rstrip(),
        f"Machine:  {cpu_model()}, {os.cpu_count()} cores visible, {mr._core.num_threads()} "
        f"sampler threads; load average {load:.1f} at the end (a shared machine: expect "
        "noise of tens of percent)",
        f"Date:     {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"# 5-way 5-shot 15-query, batch {a.batch}: every candidate (best of {a.repeats} "
        "interleaved rounds)",
        "# rust speedup = the candidate's best seconds per batch / rust's (> 1: rust faster)",
        table(rows),
        "",
        f"# cost per image: variable-way (Meta-Dataset constants, batches of {a.var_batch}, "
        f"padded) vs fixed 5w5s15q (batches of {a.batch}); a cycle of {CYCLE} batches each",
        table(var),
    ]
    text = "\n".join(head) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
