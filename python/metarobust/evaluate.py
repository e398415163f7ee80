"""Evaluation: mean query accuracy over episodes with a 95% confidence interval.

``ci95 = 1.96 * std / sqrt(n)`` over per-episode accuracies (sample standard deviation),
the convention of the few-shot literature.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from ._checks import check_bool, check_int
from .episodes import EpisodeSampler
from .learners.base import Learner
from .variable_episodes import VariableEpisodeSampler

_MAX_INDEX = 2**64 - 1


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% half-width of per-episode values."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch.Tensor, got {type(values).__name__}")
    v = values.double().flatten()
    if v.numel() == 0:
        raise ValueError("values: need at least one episode")
    ci = 1.96 * float(v.std(unbiased=True)) / math.sqrt(v.numel()) if v.numel() > 1 else 0.0
    return float(v.mean()), ci


def evaluate(learner: Any, sampler: Any, episodes: int = 600, batch_size: int | None = None,
             device: torch.device | str = "cpu", start: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``learner`` on episodes ``start .. start + episodes`` of ``sampler``,
    ``batch_size`` episodes at a time (default 50 on CUDA, 10 on CPU, where smaller
    activations stay in cache and in reused memory).

    Returns ``{"accuracy", "ci95", "episodes", "ways", "shots", "queries"}``. With a
    :class:`~metarobust.VariableEpisodeSampler` (metric learners only: MAML has fixed ways),
    ``ways``, ``shots`` and ``queries`` are the means over the episodes.
    """
    device = _check_eval_args(learner, episodes, batch_size, device, start, progress)
    if isinstance(sampler, VariableEpisodeSampler):
        return _evaluate_variable(learner, sampler, episodes, batch_size, device, start)
    if not isinstance(sampler, EpisodeSampler):
        raise TypeError(f"sampler: expected an EpisodeSampler, got {type(sampler).__name__}")
    fixed = getattr(learner, "ways", None)  # a MAML classifier's outputs
    if learner.task != "classification" or (fixed is not None and fixed != sampler.ways):
        raise ValueError(f"sampler: {sampler.ways}-way episodes for a {learner.task} learner"
                         + (f" with {fixed} outputs" if fixed is not None else ""))
    if batch_size is None:
        batch_size = 50 if device.type == "cuda" else 10
    batch_size = min(batch_size, episodes)
    was_training = learner.training
    learner.eval()
    accs = []
    n_batches = math.ceil(episodes / batch_size)
    bar = tqdm(total=episodes, desc="eval", unit="ep", disable=None if progress else True,
               leave=False)
    try:
        with sampler.batches(batch_size, start=start, num_batches=n_batches,
                             pin_memory=device.type == "cuda") as it:
            for batch in it:
                acc = learner.evaluate_batch(batch.to(device, non_blocking=True), sampler.ways)
                accs.append(acc.detach().float().cpu())
                bar.update(len(acc))
    finally:
        bar.close()
        learner.train(was_training)
    acc = torch.cat(accs)[:episodes]
    mean, ci = mean_ci95(acc)
    return {"accuracy": mean, "ci95": ci, "episodes": int(acc.numel()), "ways": sampler.ways,
            "shots": sampler.shots, "queries": sampler.queries}


def _evaluate_variable(learner: Any, sampler: VariableEpisodeSampler, episodes: int,
                       batch_size: int | None, device: torch.device,
                       start: int) -> dict[str, Any]:
    """:func:`evaluate` over variable-way episodes, ``batch_size`` (default 10) at a time."""
    fixed = getattr(learner, "ways", None)
    if learner.task != "classification" or fixed is not None:
        raise ValueError(f"sampler: variable-way episodes need a learner without a fixed "
                         f"number of ways; this {type(learner).__name__} has {fixed} outputs "
                         "(use ProtoNet, or an EpisodeSampler)")
    batch_size = min(batch_size or 10, episodes)
    was_training = learner.training
    learner.eval()
    accs, info = [], []
    try:
        for b0 in range(start, start + episodes, batch_size):
            n = min(batch_size, start + episodes - b0)
            batch = sampler.sample_batch(b0, n)
            accs.append(learner.evaluate_batch(batch.to(device), None).detach().float().cpu())
            info.append(torch.from_numpy(sampler.describe(b0, n)))
    finally:
        learner.train(was_training)
    acc = torch.cat(accs)
    mean, ci = mean_ci95(acc)
    d = torch.cat(info).double()
    return {"accuracy": mean, "ci95": ci, "episodes": int(acc.numel()),
            "ways": float(d[:, 1].mean()), "shots": float((d[:, 2] / d[:, 1]).mean()),
            "queries": float((d[:, 3] / d[:, 1]).mean())}


def evaluate_regression(learner: Any, tasks: Any, episodes: int = 600, batch_size: int = 100,
                        device: torch.device | str = "cpu", steps: tuple[int, ...] = (1, 5, 10),
                        start: int = 0) -> dict[str, Any]:
    """Query MSE of a regression MAML on tasks ``start .. start + episodes`` of ``tasks``
    (e.g. :func:`metarobust.data.sinusoid`), after each number of test inner ``steps``.

    Returns ``{"mse", "ci95", "mse_by_steps": {"1": ..., ...}, "ci95_by_steps", "episodes"}``
    where ``mse`` is for the learner's own ``test_inner_steps``.
    """
    device = _check_eval_args(learner, episodes, check_int(batch_size, "batch_size", 1), device,
                              start, True)
    if learner.task != "regression":
        raise ValueError(f"learner: expected a regression MAML, got a {learner.task} "
                         f"{type(learner).__name__}")
    for name in ("sample_batch", "shots", "queries"):
        if not hasattr(tasks, name):
            raise TypeError(f"tasks: expected a task family such as metarobust.data.sinusoid, "
                            f"got {type(tasks).__name__}")
    if not isinstance(steps, (tuple, list)):
        raise TypeError(f"steps: expected a tuple of ints, got {steps!r}")
    steps = tuple(check_int(k, "steps", 0) for k in steps)
    own = learner.test_inner_steps
    was_training = learner.training
    learner.eval()
    by_steps, ci_by_steps = {}, {}
    try:
        for k in dict.fromkeys((own, *steps)):
            learner.test_inner_steps = k
            errors = []
            for b0 in range(start, start + episodes, batch_size):
                n = min(batch_size, start + episodes - b0)
                batch = type(tasks.sample_batch(b0, n))(
                    *(t.to(device) for t in tasks.sample_batch(b0, n)))
                errors.append(learner.evaluate_batch(batch, None).detach().double().cpu())
            by_steps[str(k)], ci_by_steps[str(k)] = mean_ci95(torch.cat(errors))
    finally:
        learner.test_inner_steps = own
        learner.train(was_training)
    return {"mse": by_steps[str(own)], "ci95": ci_by_steps[str(own)],
            "mse_by_steps": {str(k): by_steps[str(k)] for k in steps},
            "ci95_by_steps": {str(k): ci_by_steps[str(k)] for k in steps},
            "episodes": episodes, "shots": tasks.shots, "queries": tasks.queries}


def _check_eval_args(learner: Any, episodes: Any, batch_size: Any, device: Any, start: Any,
                     progress: Any) -> torch.device:
    """The arguments both evaluations share, checked; returns the device."""
    if not isinstance(learner, Learner):
        raise TypeError(f"learner: expected a metarobust Learner, got {type(learner).__name__}")
    check_int(episodes, "episodes", 1)
    if batch_size is not None:
        check_int(batch_size, "batch_size", 1)
    check_int(start, "start", 0, _MAX_INDEX)
    check_bool(progress, "progress")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device: {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} needs CUDA, and torch sees no CUDA device")
    return dev
