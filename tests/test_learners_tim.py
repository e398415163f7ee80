"""TIM-GD (metarobust.learners.tim): the loss terms against NumPy formulas, the batched
weights after each number of iterations against a per-task loop of torch.optim.Adam on the
authors' loss written out here (each term alone and the default mix), zero iterations as
the scaled nearest-prototype classifier, the fit lowering the loss, classes without
support items, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from _nets import linear_backbone

from metarobust.learners import TIM
from metarobust.learners.tim import tim_fit, tim_loss_terms

# the head fits run many tiny operations: threads only add contention
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def features(c: int = 3, shots: int = 2, queries: int = 4, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(WAYS).repeat(shots).expand(c, -1).contiguous()
    se = F.normalize(torch.randn(c, WAYS * shots, d, generator=g, dtype=torch.float64), dim=-1)
    qe = F.normalize(torch.randn(c, WAYS * queries, d, generator=g, dtype=torch.float64),
                     dim=-1)
    return se, sy, qe


def prototypes(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([s[y == k].mean(0) for k in range(WAYS)])


def loop_fit(s, y, q, iterations, lr, temperature, weights) -> torch.Tensor:
    """One task: Adam on the loss of the authors' code, through autograd."""
    w = prototypes(s, y).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    onehot = F.one_hot(y, WAYS).double()

    def logits(x: torch.Tensor) -> torch.Tensor:
        return temperature * (x @ w.T - 0.5 * (w ** 2).sum(1) - 0.5 * (x ** 2).sum(1, True))

    with torch.enable_grad():
        for _ in range(iterations):
            ce = -(onehot * torch.log(logits(s).softmax(1) + 1e-12)).sum(1).mean()
            pq = logits(q).softmax(1)
            cond = -(pq * torch.log(pq + 1e-12)).sum(1).mean()
            m = pq.mean(0)
            marg = -(m * torch.log(m)).sum()
            loss = weights[0] * ce - (weights[1] * marg - weights[2] * cond)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


@pytest.mark.parametrize("weights", [(0.1, 1.0, 0.1), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                     (0.0, 0.0, 1.0)])
@pytest.mark.parametrize("iterations", [1, 3, 25])
def test_the_batched_weights_are_the_per_task_adam_loop(weights, iterations):
    se, sy, qe = features()
    w = tim_fit(se, sy, qe, WAYS, iterations=iterations, lr=1e-2, temperature=4.0,
                ce_weight=weights[0], marginal_weight=weights[1],
                conditional_weight=weights[2])
    for t in range(se.shape[0]):
        ref = loop_fit(se[t], sy[t], qe[t], iterations, 1e-2, 4.0, weights)
        torch.testing.assert_close(w[t], ref, rtol=1e-8, atol=1e-10)
    assert float((w - torch.stack([prototypes(s, y) for s, y in zip(se, sy)])).abs().max()) > 0


def test_the_loss_terms_are_the_formulas():
    se, sy, qe = features(c=2)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(2, WAYS, se.shape[-1], generator=g, dtype=torch.float64)
    ce, marginal, conditional = tim_loss_terms(w, se, sy, qe, temperature=3.0)
    for t in range(2):
        s, q, ww, y = se[t].numpy(), qe[t].numpy(), w[t].numpy(), sy[t].numpy()

        def probs(x: np.ndarray, ww: np.ndarray = ww) -> np.ndarray:
            z = -1.5 * ((x[:, None, :] - ww[None]) ** 2).sum(-1)  # -T/2 |x - w|^2
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        ps, pq = probs(s), probs(q)
        np.testing.assert_allclose(float(ce[t]), -np.log(ps[np.arange(len(y)), y]).mean(),
                                   rtol=1e-10)
        m = pq.mean(0)
        np.testing.assert_allclose(float(marginal[t]), -(m * np.log(m)).sum(), rtol=1e-10)
        np.testing.assert_allclose(float(conditional[t]),
                                   -(pq * np.log(pq + 1e-12)).sum(1).mean(), rtol=1e-10)


def test_zero_iterations_is_the_scaled_nearest_prototype_classifier():
    net = linear_backbone()
    learner = TIM(net, iterations=0, temperature=6.0).double()
    batch = image_batch(b=2, shots=3, queries=2)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s = F.normalize(net(batch.support_x[i]), dim=-1).detach().numpy()
        q = F.normalize(net(batch.query_x[i]), dim=-1).detach().numpy()
        y = batch.support_y[i].numpy()
        protos = np.stack([s[y == k].mean(0) for k in range(WAYS)])
        ref = -3.0 * ((q[:, None, :] - protos[None]) ** 2).sum(-1)
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-10, atol=1e-12)


def test_the_learner_uses_the_fitted_weights():
    net = linear_backbone()
    learner = TIM(net, iterations=30, lr=1e-3).double()
    batch = image_batch(b=2, shots=2, queries=3)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s = F.normalize(net(batch.support_x[i]), dim=-1).detach()
        q = F.normalize(net(batch.query_x[i]), dim=-1).detach()
        w = loop_fit(s, batch.support_y[i], q, 30, 1e-3, 15.0, (0.1, 1.0, 0.1))
        ref = -7.5 * ((q[:, None, :] - w[None]) ** 2).sum(-1)
        torch.testing.assert_close(out[i], ref, rtol=1e-8, atol=1e-9)


def test_the_default_fit_lowers_the_loss():
    se, sy, qe = features(c=4, shots=1, queries=15, d=16, seed=2)
    w0 = torch.stack([prototypes(s, y) for s, y in zip(se, sy)])
    w = tim_fit(se, sy, qe, WAYS)  # the paper's 1000 Adam steps at 1e-4

    def loss(w: torch.Tensor) -> torch.Tensor:
        ce, marginal, conditional = tim_loss_terms(w, se, sy, qe)
        return 0.1 * ce - (marginal - 0.1 * conditional)

    assert bool((loss(w) < loss(w0) - 1e-3).all())


def test_a_class_without_support_items_is_never_predicted():
    learner = TIM(linear_backbone(), iterations=20, lr=1e-2).double()
    batch = image_batch(b=2, shots=2)
    sy = batch.support_y.clone()
    sy[0][sy[0] == 2] = 1
    out = learner.query_logits(batch._replace(support_y=sy), WAYS)
    assert bool(torch.isinf(out[0, :, 2]).all()) and bool(torch.isfinite(out[0, :, :2]).all())
    assert bool(torch.isfinite(out[1]).all())


@pytest.mark.parametrize("kw, exc, words", [
    (dict(iterations=-1), ValueError, "iterations: must be in [0, 100000], got -1"),
    (dict(iterations=True), TypeError, "iterations: expected an int, got True"),
    (dict(lr=float("nan")), ValueError, "lr: must be finite and > 0, got nan"),
    (dict(lr=0.0), ValueError, "lr: must be finite and > 0, got 0.0"),
    (dict(temperature=-15.0), ValueError, "temperature: must be finite and > 0"),
    (dict(ce_weight=-0.1), ValueError, "ce_weight: must be finite and >= 0, got -0.1"),
    (dict(marginal_weight=float("inf")), ValueError, "marginal_weight: must be finite"),
    (dict(conditional_weight="0.1"), TypeError, "conditional_weight: expected a real number"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        TIM(linear_backbone(), **kw)
