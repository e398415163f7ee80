"""MetaOptNet-SVM (metarobust.learners.metaoptnet) and its dual solver
(metarobust.learners._svm): the simplex projection against bisection, the dual's weights
against the Crammer-Singer primal solved by scipy's SLSQP and the duality gap, the unrolled
gradients against finite differences (gradcheck) and, at convergence, against finite
differences of the reference solution; the learner's logits, solver steps and bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from scipy.optimize import minimize
from torch import nn

from metarobust.learners import MetaOptNet
from metarobust.learners._svm import crammer_singer_dual, project_simplex


def bisection_projection(v: np.ndarray, total: float) -> np.ndarray:
    lo, hi = v.min() - total, v.max()
    for _ in range(200):  # sum(max(v - t, 0)) is decreasing in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(v - mid, 0).sum() > total else (lo, mid)
    return np.maximum(v - (lo + hi) / 2, 0)


def primal_reference(x: np.ndarray, y: np.ndarray, k: int, c: float) -> np.ndarray:
    """The Crammer-Singer primal, min 1/2 |W|^2 + C sum xi, solved by SLSQP:
    ``w_{y_i} x_i - w_m x_i >= 1 - [m = y_i] - xi_i`` for all i, m."""
    n, d = x.shape

    def split(z):
        return z[:k * d].reshape(k, d), z[k * d:]

    cons = []
    for i in range(n):
        for m in range(k):
            def g(z, i=i, m=m):
                w, xi = split(z)
                return w[y[i]] @ x[i] - w[m] @ x[i] - (1.0 - (m == y[i])) + xi[i]
            cons.append({"type": "ineq", "fun": g})
    res = minimize(lambda z: 0.5 * (z[:k * d] ** 2).sum() + c * z[k * d:].sum(),
                   np.zeros(k * d + n), constraints=cons, method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 2000})
    assert res.success, res.message
    return split(res.x)[0]


def weights(x: torch.Tensor, y: torch.Tensor, k: int, c: float, steps: int) -> torch.Tensor:
    alpha = crammer_singer_dual((x @ x.T)[None], F.one_hot(y, k).to(x.dtype)[None], c, steps)[0]
    return alpha.T @ x


def problem(seed: int, n: int = 6, d: int = 4, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % k
    return x, y


def test_projection_matches_bisection():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(50, 7, generator=g, dtype=torch.float64) * 3
    for total in (0.1, 1.0, 5.0):
        got = project_simplex(v, total).numpy()
        ref = np.stack([bisection_projection(row, total) for row in v.numpy()])
        np.testing.assert_allclose(got, ref, atol=1e-10)


@pytest.mark.parametrize("seed, c", [(0, 0.1), (1, 1.0), (2, 0.5)])
def test_dual_weights_match_the_primal_reference(seed, c):
    x, y = problem(seed)
    w = weights(x, y, 3, c, steps=3000).numpy()
    ref = primal_reference(x.numpy(), y.numpy(), 3, c)
    np.testing.assert_allclose(w, ref, atol=2e-5)


def test_duality_gap_closes():
    x, y = problem(3, n=10, d=5, k=4)
    c = 0.3
    alpha = crammer_singer_dual((x @ x.T)[None], F.one_hot(y, 4).double()[None], c, 3000)[0]
    assert bool((alpha <= c * F.one_hot(y, 4) + 1e-12).all())
    torch.testing.assert_close(alpha.sum(1), torch.zeros(10, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    w = alpha.T @ x
    dual = -(0.5 * (w ** 2).sum() - alpha[torch.arange(10), y].sum())
    scores = x @ w.T
    margins = scores + 1.0 - F.one_hot(y, 4) - scores[torch.arange(10), y][:, None]
    primal = 0.5 * (w ** 2).sum() + c * margins.max(1).values.clamp_min(0).sum()
    assert float(primal - dual) == pytest.approx(0.0, abs=1e-7)


def test_unrolled_gradients_match_finite_differences():
    x, y = problem(4, n=5, d=3)
    x.requires_grad_(True)
    yy = F.one_hot(y, 3).double()[None]
    assert torch.autograd.gradcheck(
        lambda x: crammer_singer_dual((x @ x.T)[None], yy, 0.5, 25), (x,))


def test_converged_gradients_are_those_of_the_exact_solution():
    x, y = problem(5, n=5, d=3)
    q = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    r = torch.randn(4, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    c = 0.1
    xg = x.clone().requires_grad_(True)
    ((q @ weights(xg, y, 3, c, steps=3000).T) * r).sum().backward()
    h = 1e-3  # SLSQP's weights are good to ~1e-8: a smaller step would amplify that
    fd = torch.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        vals = []
        for sign in (1, -1):
            xp = x.clone()
            xp[idx] += sign * h
            w = primal_reference(xp.numpy(), y.numpy(), 3, c)
            vals.append(float(((q.numpy() @ w.T) * r.numpy()).sum()))
        fd[idx] = (vals[0] - vals[1]) / (2 * h)
    torch.testing.assert_close(xg.grad, fd, atol=1e-4, rtol=1e-3)


def test_learner_logits_are_scaled_svm_scores_and_steps_follow_the_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6)).double()
    learner = MetaOptNet(net, c=0.2, solver_steps=3, test_solver_steps=500, scale=2.0).double()
    batch = image_batch(b=2, shots=2, queries=3)
    learner.eval()
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        x, q = net(batch.support_x[i]), net(batch.query_x[i])
        w = weights(x, batch.support_y[i], WAYS, 0.2, steps=500)
        torch.testing.assert_close(out[i], 2.0 * q @ w.T, rtol=1e-6, atol=1e-6)
    learner.train()
    with torch.no_grad():
        train_out = learner(batch.support_x, batch.support_y, batch.query_x)
    assert not torch.allclose(train_out, out)  # 3 iterations are not converged
    learner.meta_backward(batch, WAYS)
    assert learner.log_scale.grad is not None and net[1].weight.grad is not None


@pytest.mark.parametrize("kw, exc, words", [
    (dict(c=0), ValueError, "c: must be finite and > 0, got 0"),
    (dict(solver_steps=0), ValueError, r"solver_steps: must be in \[1, 100000\], got 0"),
    (dict(test_solver_steps=2.5), TypeError, "test_solver_steps: expected an int, got 2.5"),
    (dict(scale=float("inf")), ValueError, "scale: must be finite and > 0"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words):
        MetaOptNet(nn.Flatten(), **kw)
