"""The orchestrator behind ``metarobust bench``: runs the comparisons of one subject or all,
prints their tables and the targets, and returns the rows."""

from __future__ import annotations

import sys
from typing import Any

import torch

from .corruptions import CORRUPTION_SEVERITY, bench_corruptions, corruption_summary
from .kernels import DEFAULT_KERNEL_SHAPES, bench_kernels, kernel_overhead_probe, kernel_summary
from .maml import (
    DEFAULT_MAML_REPEATS,
    DEFAULT_MAML_TASKS,
    MAML_INNER_LR,
    MAML_INNER_STEPS,
    MAML_MODEL,
    bench_maml,
    maml_auto_path,
    maml_batch,
    maml_summary,
)
from .report import TARGETS, check_targets, print_table
from .sampler import (
    DEFAULT_BATCH,
    DEFAULT_SAMPLER_SETTINGS,
    DTYPES,
    _setting,
    bench_sampler,
    omniglot_like,
    sampler_alloc_probe,
    sampler_memory,
    sampler_summary,
)
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS

WHATS = ("sampler", "kernels", "maml", "corruptions", "all")


def _load(data_root: str | None, file: Any):
    """The benchmark images and labels, their source printed first."""
    images, labels, source = omniglot_like(data_root)
    print(f"\ndata: {source}, images {images.shape} {images.dtype}", file=file)
    return images, labels


def _run_sampler(settings, batch: int, repeats: int, min_time: float,
                 data_root: str | None, diagnostics: bool, file: Any) -> dict:
    """The sampler tables: resident memory (diagnostics), candidates, ratios, allocation
    probe (diagnostics)."""
    result: dict = {}
    images, labels = _load(data_root, file)
    if diagnostics:  # first, on a heap that the other candidates have not grown
        w, s, q = settings[0]
        mem = [sampler_memory(images, labels, w, s, q, batch, dt) for dt in DTYPES]
        print_table(mem, "Sampler resident memory (VmRSS, MiB; malloc_trim before the "
                         "start)", file)
        result["sampler_memory"] = mem
    rows = bench_sampler(images, labels, settings, batch, repeats=repeats, min_time=min_time)
    print_table(rows, f"Sampler: batches of {batch} episodes (best of {repeats} interleaved "
                      "rounds; GB/s counts output bytes)", file)
    summary = sampler_summary(rows)
    print_table(summary, "Sampler ratios (episodes/s ratios; % memcpy: of the memcpy "
                         "rate for the same bytes; memcpy/dataloader: the most any "
                         "sampler could gain over the DataLoader here)", file)
    result["sampler"], result["sampler_summary"] = rows, summary
    if diagnostics:
        probe = sampler_alloc_probe(images, labels, settings, batch, repeats=repeats,
                                    min_time=min_time)
        print_table(probe, "Diagnostic: Rust sampler output allocation (same fill call)",
                    file)
        result["sampler_alloc_probe"] = probe
    return result


def _run_kernels(shapes, repeats: int, min_time: float, diagnostics: bool,
                 file: Any) -> dict:
    """The kernel tables: candidates, ratios, overhead probe (diagnostics)."""
    result: dict = {}
    rows = bench_kernels(shapes, repeats=repeats, min_time=min_time)
    print_table(rows, f"Kernels: mean prototypes + squared Euclidean distances, float32 "
                      f"(best of {repeats} interleaved rounds; /1t = torch with 1 "
                      "thread)", file)
    summary = kernel_summary(rows)
    print_table(summary, "Kernel ratios (rust speedup = best torch ms / rust ms)", file)
    result["kernels"], result["kernel_summary"] = rows, summary
    if diagnostics:
        probe = kernel_overhead_probe(shapes[0], repeats=repeats, min_time=min_time)
        print_table(probe, "Diagnostic: fused op, public call vs bare Rust calls", file)
        result["kernel_overhead_probe"] = probe
    return result


def _run_maml(setting: tuple[int, int, int], tasks: int, repeats: int,
              data_root: str | None, device: str, file: Any) -> dict:
    """The MAML tables: candidates (agreement checked, peak memory), ratios."""
    w, k, q = setting
    batch = maml_batch(tasks, w, k, q, data_root=data_root, device=device)
    auto = maml_auto_path(device, tasks)
    print(f"\nMAML: {MAML_MODEL} on {tuple(batch.support_x.shape[2:])} inputs, "
          f"{w}-way {k}-shot {q}-query, meta-batch {tasks}, {MAML_INNER_STEPS} inner step(s) "
          f"at lr {MAML_INNER_LR}, device {device}: path auto -> {auto}", file=file)
    rows = bench_maml(batch, repeats=repeats, device=device)
    mem = ("VmHWM - VmRSS before the step, fresh subprocess per candidate"
           if torch.device(device).type == "cpu" else
           "cuda max_memory_allocated - allocated before, subprocess per candidate")
    print_table(rows, f"MAML meta-training step (zero_grad + meta-gradient of {tasks} tasks; "
                      f"best of {repeats} interleaved rounds, median beside; peak "
                      f"MiB: {mem}; grad err: meta-gradient vs the reference's, float64, "
                      "2 tasks, max |difference| / max |reference|)",
                file)
    summary = maml_summary(rows)
    print_table(summary, "MAML ratios (tasks/s of best rounds; auto = metarobust's "
                         "default path)", file)
    return {"maml": rows, "maml_summary": summary}


def _run_corruptions(setting: tuple[int, int, int], batch: int, severity: int, repeats: int,
                     min_time: float, data_root: str | None, file: Any) -> dict:
    """The corruption tables: every corruption against the clean sampler, ratios."""
    images, labels = _load(data_root, file)
    rows = bench_corruptions(images, labels, setting, batch, severity=severity,
                             repeats=repeats, min_time=min_time)
    print_table(rows, f"Corruptions: {_setting(*setting)} batches of {batch}, queries "
                      f"corrupted at severity {severity} (best of {repeats} interleaved "
                      "rounds; x clean = time / the clean sampler's)", file)
    summary = corruption_summary(rows)
    print_table(summary, "Corruption ratios (corrupted / clean time per batch; target "
                         f"<= {TARGETS['corrupted_vs_clean']})", file)
    return {"corruptions": rows, "corruption_summary": summary}


def _kernel_shapes(tasks, ways, shots, queries, dim):
    """The default shapes, or the one that the given sizes describe (see :func:`run`)."""
    if all(v is None for v in (tasks, ways, shots, queries, dim)):
        return DEFAULT_KERNEL_SHAPES
    n = ways or 5
    return ((tasks or 32, n, shots or 5, n * (15 if queries is None else queries), dim or 64),)


def run(what: str = "all", *, ways: int | None = None, shots: int | None = None,
        queries: int | None = None, batch: int | None = None, dim: int | None = None,
        tasks: int | None = None, repeats: int | None = None,
        min_time: float = DEFAULT_MIN_TIME, data_root: str | None = None,
        diagnostics: bool = True, device: str = "cpu", file: Any = None,
        severity: int = CORRUPTION_SEVERITY) -> dict:
    """Runs and prints the ``sampler``, ``kernels``, ``maml`` and/or ``corruptions``
    comparisons (``all``: the four); returns all rows.

    ways/shots/queries replace the default sampler settings with one; batch applies to
    every sampler setting. For kernels, any of tasks/ways/shots/queries/dim replaces the
    default shapes with ``(tasks or 32, ways or 5, shots or 5, (ways or 5) * (queries or
    15), dim or 64)``: ``queries`` counts per class, as for the sampler. diagnostics: also
    the resident-memory check, the output-allocation probe and the kernel-overhead probe.
    MAML: meta-batch ``tasks`` (default 32), ``ways or 5``-way ``shots or 1``-shot
    ``queries or 15``-query, on ``device``. repeats: interleaved rounds (default 7;
    MAML 3, one meta-training step per candidate per round). Corruptions: every corruption
    at ``severity`` on the queries of ``ways or 5``-way ``shots or 1``-shot ``queries or
    15``-query episodes, batch ``batch or 64``, against the clean sampler.
    """
    if what not in WHATS:
        raise ValueError(f"what: expected one of {', '.join(WHATS)}, got {what!r}")
    maml_repeats = DEFAULT_MAML_REPEATS if repeats is None else repeats
    repeats = DEFAULT_REPEATS if repeats is None else repeats
    file = file or sys.stdout
    setting = (ways or 5, shots or 1, 15 if queries is None else queries)
    b = batch or DEFAULT_BATCH
    result: dict = {}
    if what in ("sampler", "all"):
        settings = DEFAULT_SAMPLER_SETTINGS
        if ways or shots or queries is not None:
            settings = (setting,)
        result |= _run_sampler(settings, b, repeats, min_time, data_root, diagnostics, file)
    if what in ("kernels", "all"):
        shapes = _kernel_shapes(tasks, ways, shots, queries, dim)
        result |= _run_kernels(shapes, repeats, min_time, diagnostics, file)
    if what in ("maml", "all"):
        result |= _run_maml(setting, tasks or DEFAULT_MAML_TASKS, maml_repeats, data_root,
                            device, file)
    if what in ("corruptions", "all"):
        result |= _run_corruptions(setting, b, severity, repeats, min_time, data_root, file)
    targets = check_targets(result.get("sampler"), result.get("kernels"), result.get("maml"),
                            device, result.get("corruptions"))
    if targets:
        print_table(targets, "Targets", file)
        result["targets"] = targets
    return result
