"""Robust meta-training objectives: adversarial querying (AQ), TRADES (R-MAML) and ADML.

Each objective is one meta-training step's backward: like ``learner.meta_backward`` it
accumulates the meta-gradient into the parameters' ``.grad`` and returns the step's
``{"loss", "accuracy"}``; the caller zeroes the gradients and steps the optimiser. They
work through the :class:`~metarobust.learners.Learner` interface, so ProtoNet, Matching,
Relation, R2-D2, MetaOptNet, ProtoMAML and the MAML family all take them (Reptile, whose
``meta_backward`` writes ``theta - phi`` into ``.grad`` rather than differentiating a query
loss, does not: it is refused). Every adversarial set comes from PGD with the same settings
(``eps``, ``steps``, ``step_size``, ``norm``, a random start from ``seed``), run in the
learner's current (training) mode with the parameters as constants and the BatchNorm
running statistics untouched, as :func:`~metarobust.robust.adversarial_queries` does.
Write ``f(S, Q)`` for the query outputs of the learner's whole forward: MAML's inner loop on
the support ``S`` then the queries ``Q``, ProtoNet's prototypes of ``S``, and so on.

``aq`` (Goldblum et al., 2020): the meta-loss ``L(f(S, Q'))`` on PGD queries ``Q'`` that
maximise it (:func:`~metarobust.robust.adversarial_queries` then ``meta_backward``).

``trades`` (Zhang et al., 2019; for meta-learning R-MAML, Wang et al., 2021)::

    loss = L(f(S, Q)) + beta * KL(softmax f(S, Q) || softmax f(S, Q'))

per query, averaged over the queries and the tasks; ``L`` is the learner's own loss
(cross-entropy; Relation Networks' MSE). ``Q'`` maximises the KL term by PGD, the clean
distribution held fixed. The clean and adversarial queries see the same adaptation (the
support is clean; MAML's inner loop is deterministic and runs once per forward); each
forward normalises BatchNorm with its own batch, as TRADES' separate clean and adversarial
forwards do. ``beta = 0`` is natural training (no attack is run); larger ``beta`` trades
clean accuracy for robustness (TRADES' usual values: 1 to 6). Gradients flow through both
terms, the clean distribution included.

R-MAML found the robust term in the outer loop enough, and that is the default
(``inner=False``: the inner loop adapts on the clean support only). With ``inner=True``
(the MAML family: MAML, first-order MAML, Meta-SGD, ANIL) the inner loop's loss gets the
TRADES term too: for a support ``(x_s, y_s)`` of ``n`` items, PGD first finds ``x_s'``
maximising ``KL(softmax g(x_s) || softmax g(x_s'))`` for the unadapted network ``g``
(the meta-parameters); every inner step then minimises ::

    CE(g_phi(x_s), y_s) + beta * KL(softmax g_phi(x_s) || softmax g_phi(x_s'))

at the current fast weights ``phi`` (the clean and adversarial support are one 2n-item
forward, so BatchNorm normalises them together), and the outer loss is TRADES' above.

``adml`` (Yin et al., 2018): clean and adversarial samples in both loops::

    loss = L(f(S, Q')) + L(f(S', Q))

``Q'``: PGD queries maximising ``L(f(S, Q'))`` (AQ's attack); ``S'``: a PGD support
maximising the clean queries' loss ``L(f(S', Q))`` (poisoning, through the adaptation or
the prototypes). Both are found against the current model before either term is
back-propagated. The paper attacks MAML's unadapted network with FGSM; the attacks here go
through the learner's whole forward so that one definition covers every learner. ADML's
step costs two attacks and two meta-backwards (about twice AQ's).

How to choose: ``aq`` is the cheapest step and gave the best robust and clean accuracy
for a CPU budget on Omniglot (``docs/robustness.md``); ``trades`` keeps a clean term, with
``beta`` as the dial (a ProtoNet's large logits make the KL large: start around 1);
``adml`` also trains for a perturbed support set, at twice aq's cost per step.

>>> learner.train(); opt.zero_grad()                                    # doctest: +SKIP
>>> trades_backward(learner, batch, 5, eps=8 / 255, beta=6.0, seed=step)  # doctest: +SKIP
>>> opt.step()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .. import seeds
from .._checks import check_bool, check_choice, check_int, check_real
from ..learners.base import Learner, replace_fields, slice_batch
from ..learners.maml import MAML
from ..learners.protomaml import ProtoMAML
from ..learners.reptile import Reptile
from .attacks import _check_real, _check_size, _pgd, _prepare, adversarial_queries

__all__ = ["OBJECTIVES", "adml_backward", "adml_batches", "check_objective", "meta_objective",
           "trades_backward", "trades_kl", "trades_queries"]

OBJECTIVES = ("aq", "trades", "adml")


# ---------------------------------------------------------------- checks

def check_objective(learner: Any, method: str, inner: bool = False) -> None:
    """Refuses (ValueError) a learner the objective ``method`` cannot train, and ``inner``
    for learners without a MAML inner loop."""
    method = check_choice(method, "method", OBJECTIVES)
    if not isinstance(learner, Learner):
        raise TypeError(f"learner: expected a metarobust Learner, got {type(learner).__name__}")
    if method != "aq" and isinstance(learner, Reptile):
        raise ValueError(f"method: {method!r} differentiates a query loss; Reptile's "
                         "meta_backward writes theta - phi into .grad instead (use 'aq' or "
                         "another learner)")
    if inner and (method != "trades" or not isinstance(learner, MAML)
                  or isinstance(learner, ProtoMAML)):
        raise ValueError(f"inner: the TRADES term in the inner loop needs method 'trades' and "
                         f"a MAML, first-order MAML, Meta-SGD or ANIL learner; got method "
                         f"{method!r} and {type(learner).__name__} (ProtoMAML builds its "
                         "head from the support, which the adversarial copies would change)")


def _attack_args(learner: Learner, steps: Any, step_size: Any, seed: Any,
                 x: torch.Tensor) -> tuple[int, float, int, int | None]:
    steps = check_int(steps, "steps", 0)
    step_size = _check_size(_check_real(step_size, "step_size"), "step_size", x)
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    inner = getattr(learner, "inner_steps", None) if learner.training else None
    return steps, step_size, seed, inner if isinstance(inner, int) else None


# ---------------------------------------------------------------- TRADES

def trades_kl(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(clean) || softmax(adv))`` of each query, averaged over each task's
    queries: ``(c, Q, ways)`` outputs give ``(c,)``. A class at ``-inf`` in both (no support
    item) adds nothing."""
    lo = torch.finfo(clean.dtype).min
    log_clean = F.log_softmax(clean.clamp_min(lo), -1)
    log_adv = F.log_softmax(adv.clamp_min(lo), -1)
    return (log_clean.exp() * (log_clean - log_adv)).sum(-1).mean(-1)


class _KLObjective:
    """TRADES' attack objective: the KL from the fixed clean query distribution to the
    distribution at the perturbed queries."""

    def __init__(self, learner: Learner, batch: Any, ways: int, inner_steps: int | None):
        self.learner, self.batch, self.ways, self.inner_steps = learner, batch, ways, inner_steps
        self.clean = learner.attack_logits(batch, ways, inner_steps=inner_steps).detach()

    def grad(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach().requires_grad_(True)
        adv = self.learner.attack_logits(replace_fields(self.batch, query_x=images), self.ways,
                                         inner_steps=self.inner_steps)
        (g,) = torch.autograd.grad(trades_kl(self.clean, adv).sum(), images)
        return g


def _trades_pgd(learner: Learner, batch: Any, ways: int, eps: float, steps: int,
                step_size: float, norm: str, seed: int, inner_steps: int | None) -> Any:
    if eps == 0:
        return batch
    objective = _KLObjective(learner, batch, ways, inner_steps)
    return _pgd(learner, batch, ways, eps, steps, step_size, norm, True, "query", seed,
                inner_steps, objective)


def trades_queries(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255,
                   steps: int = 7, step_size: float = 2 / 255, norm: str = "linf", *,
                   seed: int = 0) -> Any:
    """The batch with its queries replaced by TRADES' adversarial queries: PGD from a random
    start (``seed``) maximising ``trades_kl(f(S, Q), f(S, Q'))``, in the learner's current
    mode (training: MAML adapts with ``inner_steps``). Images: as for
    :func:`~metarobust.robust.pgd`; the returned batch holds float images."""
    ways = check_int(ways, "ways", 1)
    learner, batch, norm, _, eps, x = _prepare(learner, batch, ways, "query", norm, eps)
    steps, step_size, seed, inner = _attack_args(learner, steps, step_size, seed, x)
    return _trades_pgd(learner, batch, ways, eps, steps, step_size, norm, seed, inner)


@contextlib.contextmanager
def _inner_trades_loss(learner: MAML, beta: float) -> Iterator[None]:
    """Within the block, ``learner``'s inner loss over a doubled support (clean items, then
    their adversarial copies) is CE on the clean half + beta * KL(clean half || copies)."""
    plain = learner._loss

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = out.shape[0] // 2
        kl = trades_kl(out[None, :n], out[None, n:])[0]
        return plain(out[:n], y[:n]) + beta * kl

    learner._loss = loss  # type: ignore[method-assign]
    try:
        yield
    finally:
        del learner._loss


def _trades_terms(learner: Learner, batch: Any, adv: Any, ways: int, beta: float,
                  sync: bool) -> dict[str, Any]:
    """Back-propagates TRADES' loss chunk by chunk; the mean loss and clean accuracy."""
    def chunk_losses(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = slice_batch(batch, start, stop)
        clean = learner._chunk_outputs(chunk, ways, meta=True)
        loss, acc = learner._task_losses(clean, chunk.query_y)
        if beta:
            out = learner._chunk_outputs(slice_batch(adv, start, stop), ways, meta=True)
            loss = loss + beta * trades_kl(clean, out)
        return loss, acc

    return learner.backward_chunks(batch, chunk_losses, "accuracy", sync)


def trades_backward(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255,
                    steps: int = 7, step_size: float = 2 / 255, norm: str = "linf", *,
                    beta: float = 6.0, inner: bool = False, seed: int = 0,
                    sync: bool = True) -> dict[str, Any]:
    """TRADES' meta-loss (see the module docstring) back-propagated into ``.grad``.

    Args:
        learner: a classification learner in training mode (not Reptile).
        batch, ways: an Episode batch on the learner's device and its ways.
        eps, steps, step_size, norm: the PGD of :func:`trades_queries`.
        beta: weight of the KL term (finite, >= 0; 0: the clean meta-loss, no attack).
        inner: the TRADES term in the inner loop too (MAML, FOMAML, Meta-SGD, ANIL).
        seed: the random start of the query attack (the inner support attack's is derived
            from it); pass a new one each step.
        sync: as for ``meta_backward`` (False: 0-d tensors, no host read).

    Returns:
        ``{"loss", "accuracy"}``: the TRADES loss and the clean query accuracy, task means.
    """
    ways = check_int(ways, "ways", 1)
    beta = check_real(beta, "beta", 0.0)
    inner = check_bool(inner, "inner")
    check_objective(learner, "trades", inner)
    if not torch.is_grad_enabled():
        raise RuntimeError("trades_backward: gradients are disabled (called under "
                           "torch.no_grad())")
    learner, batch, norm, _, eps, x = _prepare(learner, batch, ways, "query", norm, eps)
    steps, step_size, seed, inner_steps = _attack_args(learner, steps, step_size, seed, x)
    sync = check_bool(sync, "sync")
    if beta == 0:
        return _trades_terms(learner, batch, batch, ways, 0.0, sync)
    context: Any = contextlib.nullcontext()
    if inner:
        assert isinstance(learner, MAML)  # check_objective's
        # the support as queries of a task with no inner steps: the unadapted network's
        # outputs on the support items
        own = replace_fields(batch, query_x=batch.support_x, query_y=batch.support_y)
        adv_s = _trades_pgd(learner, own, ways, eps, steps, step_size, norm,
                            seeds.derive(seed, seeds.ADVERSARIAL_TRAINING, 1), 0).query_x
        batch = replace_fields(batch, support_x=torch.cat([batch.support_x, adv_s], 1),
                               support_y=batch.support_y.repeat(1, 2))
        context = _inner_trades_loss(learner, beta)
    with context:
        adv = _trades_pgd(learner, batch, ways, eps, steps, step_size, norm, seed, inner_steps)
        return _trades_terms(learner, batch, adv, ways, beta, sync)


# ---------------------------------------------------------------- ADML

def adml_batches(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255,
                 steps: int = 7, step_size: float = 2 / 255, norm: str = "linf", *,
                 seed: int = 0) -> tuple[Any, Any]:
    """ADML's two batches: (clean support, adversarial queries) and (adversarial support,
    clean queries). The queries' PGD is :func:`~metarobust.robust.adversarial_queries`'
    with ``seed``; the support's maximises the clean queries' loss, from
    ``seeds.derive(seed, seeds.ADVERSARIAL_TRAINING, 1)``."""
    ways = check_int(ways, "ways", 1)
    learner, batch, norm, _, eps, x = _prepare(learner, batch, ways, "query", norm, eps)
    steps, step_size, seed, inner = _attack_args(learner, steps, step_size, seed, x)
    adv_q = _pgd(learner, batch, ways, eps, steps, step_size, norm, True, "query", seed, inner)
    adv_s = _pgd(learner, batch, ways, eps, steps, step_size, norm, True, "support",
                 seeds.derive(seed, seeds.ADVERSARIAL_TRAINING, 1), inner)
    return adv_q, adv_s


def adml_backward(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255,
                  steps: int = 7, step_size: float = 2 / 255, norm: str = "linf", *,
                  seed: int = 0, sync: bool = True) -> dict[str, Any]:
    """ADML's meta-loss ``L(f(S, Q')) + L(f(S', Q))`` back-propagated into ``.grad``
    (arguments as :func:`trades_backward`'s). Returns ``{"loss", "accuracy"}``: the sum of
    the two losses and the mean of the two query accuracies, task means."""
    check_objective(learner, "adml")
    sync = check_bool(sync, "sync")
    adv_q, adv_s = adml_batches(learner, batch, ways, eps, steps, step_size, norm, seed=seed)
    first = learner.meta_backward(adv_q, ways, sync=sync)
    second = learner.meta_backward(adv_s, ways, sync=sync)
    return {"loss": first["loss"] + second["loss"],
            "accuracy": (first["accuracy"] + second["accuracy"]) / 2}


# ---------------------------------------------------------------- the trainer's dispatch

def meta_objective(method: str, eps: float, steps: int, step_size: float, norm: str, *,
                   beta: float = 6.0, inner: bool = False,
                   seed: int = 0) -> Callable[[Learner, Any, int], dict[str, Any]]:
    """``objective(learner, batch, ways)``: one training step's robust backward by
    ``method`` (aq | trades | adml) with statistics as 0-d tensors (``sync=False``)."""
    method = check_choice(method, "method", OBJECTIVES)

    def objective(learner: Learner, batch: Any, ways: int) -> dict[str, Any]:
        if method == "trades":
            return trades_backward(learner, batch, ways, eps, steps, step_size, norm,
                                   beta=beta, inner=inner, seed=seed, sync=False)
        if method == "adml":
            return adml_backward(learner, batch, ways, eps, steps, step_size, norm, seed=seed,
                                 sync=False)
        adv = adversarial_queries(learner, batch, ways, eps, steps, step_size, norm, seed=seed)
        return learner.meta_backward(adv, ways, sync=False)

    return objective
