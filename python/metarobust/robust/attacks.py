"""Adversarial attacks on few-shot learners (FGSM, PGD) and adversarial querying.

Every attack maximises the query cross-entropy of ``learner.attack_logits(batch, ways)``
(mean over all the batch's query items) by perturbing one set of images:

* ``target="query"``: evasion, the query images are perturbed, the support set is clean;
* ``target="support"``: poisoning, the support images are perturbed to maximise the loss of
  the clean queries; the gradient flows through the prototype computation (ProtoNet) or
  the inner-loop adaptation (MAML, differentiated through its steps).

Threat model: each image (one item of ``(C, H, W)``) has its own L-inf or L2 ball of radius
``eps`` around the clean image, intersected with the [0, 1] box. The step is projected onto
the ball, then clamped to the box (the order of torchattacks; with a clean image inside the
box, clamping only moves pixels towards it, so both constraints hold). A last pass in
float64 re-projects and rounds every pixel towards its clean value, so the constraints hold
exactly as measured in float64 (``|adv - x| <= eps`` for L-inf, ``||adv - x||_2 <= eps`` for
L2, ``0 <= adv <= 1``), not merely to float32 rounding.

Conventions (the same as torchattacks 3.5.1, against which the tests compare):

* FGSM (L-inf): ``clamp(x + eps * sign(grad), 0, 1)``. With ``norm="l2"`` it is the fast
  gradient method ``x + eps * grad / ||grad||`` (torchattacks has no L2 FGSM).
* PGD L-inf: ``x' = clamp(x + clip(x' + step_size * sign(grad) - x, -eps, eps), 0, 1)``.
* PGD L2: the step is ``step_size * grad / (||grad|| + 1e-10)``, then ``delta`` is scaled
  by ``min(1, eps / ||delta||)`` and the image clamped.
* Random start: L-inf uniform in ``[-eps, eps]`` per pixel; L2 a Gaussian direction with a
  radius uniform in ``[0, eps]`` (torchattacks' convention, not uniform in the ball's
  volume); then clamped to the box. It is drawn from a ``torch.Generator`` on the batch's
  device seeded with ``seed``, so results are a function of the seed (on one device).
* The attack returns the last iterate (no best-loss restarts).

Images: uint8 batches are converted to ``x / 255`` in the learner's floating dtype (float32
for the usual learners) first (both sets); float images keep their dtype and must lie in
[0, 1]. ``eps`` and ``step_size`` are bounded by ``sqrt(max / n) / 4`` with ``max`` the
largest value of the images' dtype and ``n`` the values of one image (about ``1.6e17`` for
float32 28x28 images): beyond it the perturbation's norm overflows. The returned batch has
the same type as the input (an :class:`~metarobust.Episode` or a task NamedTuple), the other
set's values unchanged.

>>> adv = pgd(learner, batch, ways=5, eps=8 / 255, steps=20)      # doctest: +SKIP
>>> learner.evaluate_batch(adv, 5).mean()                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import check_int
from ..learners.base import Learner, check_batch, replace_fields

__all__ = ["NORMS", "TARGETS", "adversarial_queries", "fgsm", "pgd"]

NORMS = ("linf", "l2")
TARGETS = ("query", "support")

_FIELD = {"query": "query_x", "support": "support_x"}


# ---------------------------------------------------------------- argument checks

def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not (isinstance(value, torch.Tensor) and value.numel() == 1):
            raise TypeError(f"{name}: expected a real number >= 0, got {value!r} "
                            f"({type(value).__name__})")
        value = value.item()
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
    return value


def _check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}; got "
                         f"{value!r}")
    return value


def _check_learner(learner: Any) -> Learner:
    if not isinstance(learner, Learner):
        raise TypeError(f"learner: expected a metarobust Learner, got "
                        f"{type(learner).__name__}")
    if learner.task != "classification":
        raise ValueError(f"learner: attacks maximise the query cross-entropy and need a "
                         f"classification learner, got task={learner.task!r}")
    return learner


def _as_images(x: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 -> ``dtype`` / 255; float images checked to lie in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"batch.{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if not x.is_floating_point():
        raise TypeError(f"batch.{name}: expected float images in [0, 1] or uint8, got "
                        f"{x.dtype}")
    x = x.detach()
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = float(x.min()), float(x.max())
        raise ValueError(f"batch.{name}: float images must lie in [0, 1] (attacks clamp "
                         f"to that box), got values in [{lo}, {hi}]")
    return x


def _check_size(value: float, name: str, x: torch.Tensor) -> float:
    """``value`` (a radius or a step) small enough that perturbation norms of ``x``'s images
    stay finite in their dtype."""
    n = max(1, math.prod(x.shape[2:]))
    top = math.sqrt(torch.finfo(x.dtype).max / n) / 4
    if value > top:
        raise ValueError(f"{name}: must be <= {top:.3g} for {x.dtype} images of {n} values "
                         f"(larger values overflow the perturbation's norm), got {value:g}")
    return value


# ---------------------------------------------------------------- geometry

def _item_norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each item of a ``(B, n, ...)`` tensor, shaped to broadcast against it."""
    n = torch.linalg.vector_norm(t.flatten(2), dim=2)
    return n.reshape(*n.shape, *([1] * (t.dim() - 2)))


def _project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Projection onto the eps-ball around ``x``, then onto the [0, 1] box (working dtype)."""
    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _item_norms(delta)
        delta = delta * torch.where(n > eps, eps / n, torch.ones_like(n))
    return (x + delta).clamp(0.0, 1.0)


def _project_exact(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Make the constraints hold exactly as measured in float64: the perturbation is
    re-projected in float64 and each pixel rounded to ``x``'s dtype towards ``x`` (so no
    pixel moves further from ``x`` than the float64 projection allows), then clamped."""
    x64 = x.double()
    delta = adv.double() - x64
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = _item_norms(delta)
        # a hair inside the sphere so that float64 rounding of a norm cannot exceed eps
        delta = delta * torch.where(n > eps, eps * (1 - 1e-12) / n, torch.ones_like(n))
    out = (x64 + delta).to(x.dtype)
    over = (out.double() - x64).abs() > delta.abs()
    if bool(over.any()):
        out = torch.where(over, torch.nextafter(out, x), out)
    return out.clamp(0.0, 1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, seed: int) -> torch.Tensor:
    g = torch.Generator(device=x.device)
    g.manual_seed(seed)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        delta = (noise * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        radius = torch.rand((*x.shape[:2], *([1] * (x.dim() - 2))), generator=g,
                            device=x.device, dtype=x.dtype)
        n = _item_norms(direction)
        delta = direction * (radius * eps / torch.where(n > 0, n, torch.ones_like(n)))
    return _project(x + delta, x, eps, norm)


# ---------------------------------------------------------------- the attack loop

class _Objective:
    """Query cross-entropy of ``learner.attack_logits`` as a function of one image set."""

    def __init__(self, learner: Learner, batch: Any, ways: int, target: str,
                 inner_steps: int | None) -> None:
        self.learner, self.batch, self.ways = learner, batch, ways
        self.field, self.inner_steps = _FIELD[target], inner_steps
        self.y = batch.query_y.reshape(-1)

    def grad(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach().requires_grad_(True)
        logits = self.learner.attack_logits(replace_fields(self.batch, **{self.field: images}),
                                            self.ways, inner_steps=self.inner_steps)
        loss = F.cross_entropy(logits.reshape(self.y.shape[0], -1), self.y)
        # images that do not reach the loss (e.g. the support set of a MAML without inner
        # steps) have no gradient: the attack leaves them as they are
        (g,) = torch.autograd.grad(loss, images, allow_unused=True)
        return torch.zeros_like(images) if g is None else g


def _prepare(learner: Any, batch: Any, ways: Any, target: Any, norm: Any,
             eps: Any) -> tuple[Learner, Any, str, str, float, torch.Tensor]:
    learner = _check_learner(learner)
    check_batch(batch)
    norm = _check_choice(norm, "norm", NORMS)
    target = _check_choice(target, "target", TARGETS)
    eps = _check_real(eps, "eps")
    dtype = learner._param_ref().dtype
    sx = _as_images(batch.support_x, "support_x", dtype)
    qx = _as_images(batch.query_x, "query_x", dtype)
    batch = replace_fields(batch, support_x=sx, query_x=qx)
    learner._check_batch(batch, ways)
    x = qx if target == "query" else sx
    return learner, batch, norm, target, _check_size(eps, "eps", x), x


def _pgd(learner: Learner, batch: Any, ways: int, eps: float, steps: int, step_size: float,
         norm: str, random_start: bool, target: str, seed: int,
         inner_steps: int | None, objective: Any = None) -> Any:
    """PGD on ``target``'s images; ``objective`` (anything with ``grad(images)``, e.g.
    TRADES' KL in :mod:`.meta_objectives`) replaces the query cross-entropy."""
    field = _FIELD[target]
    x = getattr(batch, field)
    if eps == 0:
        return batch
    adv = _random_start(x, eps, norm, seed) if random_start else x
    if objective is None:
        objective = _Objective(learner, batch, ways, target, inner_steps)
    for _ in range(steps):
        g = objective.grad(adv)
        if norm == "linf":
            step = g.sign()
        else:
            step = g / (_item_norms(g) + 1e-10)
        adv = _project(adv + step_size * step, x, eps, norm)
    # The iterates are torchattacks' to the bit; only the result is made exact (a pixel
    # may move by one ulp, towards x), since an ulp can break max-pooling ties and so
    # change later steps.
    adv = _project_exact(adv, x, eps, norm)
    return replace_fields(batch, **{field: adv.detach()})


# ---------------------------------------------------------------- public attacks

def fgsm(learner: Learner, batch: Any, ways: int, eps: float, *, norm: str = "linf",
         target: str = "query") -> Any:
    """Fast gradient sign method (Goodfellow et al., 2015): one step of size ``eps``.

    Args:
        learner: a classification :class:`~metarobust.learners.Learner` (its mode is
            respected: use ``learner.eval()`` for evaluation).
        batch: an Episode (or task NamedTuple) batch with a leading task dimension, on the
            learner's device; images uint8 or float in [0, 1].
        ways: classes per episode.
        eps: radius of each image's ball (>= 0; 0 returns the clean images).
        norm: "linf" (``x + eps * sign(grad)``) or "l2" (``x + eps * grad / ||grad||``).
        target: "query" (evasion) or "support" (poisoning).

    Returns:
        A batch of the same type with float images, the ``target`` set perturbed.
    """
    ways = check_int(ways, "ways", 1)  # numpy ints too, as an int
    learner, batch, norm, target, eps, x = _prepare(learner, batch, ways, target, norm, eps)
    if eps == 0:
        return batch
    g = _Objective(learner, batch, ways, target, None).grad(x)
    step = g.sign() if norm == "linf" else g / (_item_norms(g) + 1e-10)
    adv = _project_exact((x + eps * step).clamp(0.0, 1.0), x, eps, norm)
    return replace_fields(batch, **{_FIELD[target]: adv.detach()})


def pgd(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255, steps: int = 20,
        step_size: float = 2 / 255, *, norm: str = "linf", random_start: bool = True,
        target: str = "query", seed: int = 0) -> Any:
    """Projected gradient descent (Madry et al., 2018) on the query loss.

    Args:
        learner, batch, ways, norm, target: as for :func:`fgsm` (``norm`` "linf" or "l2").
        eps: radius of each image's ball (>= 0; 0 returns the clean images).
        steps: gradient steps (>= 0; 0 returns the random start, or the clean images).
        step_size: size of each step (>= 0): L-inf ``step_size * sign(grad)``, L2
            ``step_size * grad / ||grad||`` per image.
        random_start: start from a random point of the ball (see the module docstring).
        seed: seed of the random start (0 <= seed < 2**64).

    Returns:
        A batch of the same type with float images, the ``target`` set perturbed.
    """
    ways = check_int(ways, "ways", 1)  # numpy ints too, as an int
    learner, batch, norm, target, eps, x = _prepare(learner, batch, ways, target, norm, eps)
    steps = check_int(steps, "steps", 0)
    step_size = _check_size(_check_real(step_size, "step_size"), "step_size", x)
    if not isinstance(random_start, bool):
        raise TypeError(f"random_start: expected a bool, got {random_start!r}")
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    return _pgd(learner, batch, ways, eps, steps, step_size, norm, random_start, target, seed,
                None)


def adversarial_queries(learner: Learner, batch: Any, ways: int, eps: float = 8 / 255,
                        steps: int = 7, step_size: float = 2 / 255, norm: str = "linf", *,
                        random_start: bool = True, seed: int = 0) -> Any:
    """Adversarial querying (Goldblum et al., 2020): the batch with its queries replaced by
    PGD adversarial queries, for ``learner.meta_backward(adv_batch, ways)``.

    The attack runs in the learner's current mode (training: BatchNorm uses batch
    statistics, MAML adapts with its training ``inner_steps``), with the parameters as
    constants and BatchNorm running statistics left unchanged; only the meta-training
    step that follows updates them. Pass a different ``seed`` at each training step (e.g.
    the step index) for fresh random starts.

    >>> learner.train(); opt.zero_grad()                               # doctest: +SKIP
    >>> adv = adversarial_queries(learner, batch, ways, seed=step)      # doctest: +SKIP
    >>> learner.meta_backward(adv, ways); opt.step()                   # doctest: +SKIP
    """
    ways = check_int(ways, "ways", 1)  # numpy ints too, as an int
    learner, batch, norm, _, eps, x = _prepare(learner, batch, ways, "query", norm, eps)
    steps = check_int(steps, "steps", 0)
    step_size = _check_size(_check_real(step_size, "step_size"), "step_size", x)
    if not isinstance(random_start, bool):
        raise TypeError(f"random_start: expected a bool, got {random_start!r}")
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    inner = getattr(learner, "inner_steps", None) if learner.training else None
    return _pgd(learner, batch, ways, eps, steps, step_size, norm, random_start, "query", seed,
                inner if isinstance(inner, int) else None)
