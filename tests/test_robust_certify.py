"""robust.certify: randomized-smoothing certificates. The Clopper-Pearson bound against the
binomial tail summed from its definition; on a linear classifier, whose smoothed classifier
is itself and whose exact certified radius is the distance to its boundary, the certified
radius never exceeds that distance and comes close to it; on a trained ProtoNet, certified
accuracy does not grow with the radius and PGD-L2 on the smoothed classifier within a
certified radius does not change its class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

import metarobust as mr
from metarobust.robust.certify import (
    certify,
    certify_queries,
    clopper_pearson_lower,
    episode_classifier,
    smoothed_counts,
)


def _log_binomial_tail(k: int, n: int, p: float) -> float:
    """log P(X >= k), X ~ Binomial(n, p), summed in log space from its definition."""
    j = np.arange(k, n + 1, dtype=np.float64)
    log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(v + 1) for v in j])
               - np.array([math.lgamma(n - v + 1) for v in j])
               + j * math.log(p) + (n - j) * math.log1p(-p))
    top = float(log_pmf.max())
    return top + math.log(float(np.exp(log_pmf - top).sum()))


def _reference_lower(k: int, n: int, alpha: float) -> float:
    """The p at which P(X >= k) = alpha, by bisection on the binomial tail."""
    low, high = 0.0, 1.0
    for _ in range(64):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _log_binomial_tail(k, n, mid) < math.log(alpha) \
            else (low, mid)
    return low


@pytest.mark.parametrize("k,n,alpha", [(1, 1, 0.001), (1, 10, 0.05), (5, 10, 0.001),
                                       (999, 1000, 0.001), (1000, 1000, 0.001),
                                       (500, 1000, 0.01), (37, 20000, 0.001),
                                       (19990, 20000, 1e-6)])
def test_clopper_pearson_lower_solves_the_binomial_tail(k, n, alpha):
    assert clopper_pearson_lower(k, n, alpha) == \
        pytest.approx(_reference_lower(k, n, alpha), rel=1e-7, abs=1e-12)


def test_clopper_pearson_edges_and_bad_input():
    assert clopper_pearson_lower(0, 10, 0.001) == 0.0
    assert clopper_pearson_lower(10, 10, 0.05) == pytest.approx(0.05 ** 0.1, rel=1e-9)
    with pytest.raises(ValueError, match="successes: 11 is more than trials"):
        clopper_pearson_lower(11, 10, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(1, 10, 1.0)
    with pytest.raises(TypeError, match="trials"):
        clopper_pearson_lower(1, 10.0, 0.1)


def _linear(w: torch.Tensor, b: float):
    def classify(x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1).double() @ w + b) > 0).long()
    return classify


def test_linear_classifier_certificates_are_sound_and_tight():
    """For f(x) = [w.x + b > 0] (no clipping inside the box), the smoothed classifier is f
    and the exact radius is |w.x + b| / ||w||: a certified radius must not exceed it."""
    torch.manual_seed(0)
    d, sigma = 16, 0.25
    w = torch.randn(d, dtype=torch.float64)
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4)  # far enough from 0 and 1 that clipping is rare
    b = -float((x.flatten(1).double() @ w).mean())
    true = ((x.flatten(1).double() @ w + b) > 0).long()
    distance = (x.flatten(1).double() @ w + b).abs() / w.norm()
    gen = torch.Generator().manual_seed(1)
    classes, radii = certify_queries(_linear(w, b), x, 2, sigma, 100, 10000, 0.001, gen)
    certified = classes >= 0
    assert certified.sum() >= 20
    assert torch.equal(classes[certified], true[certified])
    assert (radii[certified] <= distance[certified] + 1e-9).all()
    # 10,000 samples: the bound is close (a few hundredths of sigma) where p_A < 0.999
    close = certified & (distance < 2.5 * sigma)
    assert close.sum() >= 5
    assert ((distance - radii)[close] < 0.1 * sigma).all()


def test_counts_follow_the_noise_and_clip():
    x = torch.zeros(3, 1, 2, 2)
    gen = torch.Generator().manual_seed(0)
    # a pixel above 0 after clipping: with sigma 1 about half the noisy copies
    counts = smoothed_counts(lambda z: (z.flatten(1)[:, 0] > 0).long(), x, 2, 1.0, 4000, gen,
                             batch=300)
    assert counts.sum(1).tolist() == [4000] * 3
    assert ((counts[:, 1] / 4000 - 0.5).abs() < 0.04).all()


@pytest.fixture(scope="module")
def protonet():
    torch.manual_seed(0)
    ds = mr.data.glyphs(num_classes=40, per_class=10, image_size=16, seed=0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 8 * 8, 32))
    learner = mr.learners.ProtoNet(net)
    sampler = mr.EpisodeSampler(ds, ways=3, shots=2, queries=2, seed=0)
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    for step in range(60):
        ep = sampler.sample(step)
        loss = torch.nn.functional.cross_entropy(
            learner(ep.support_x, ep.support_y, ep.query_x), ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return learner.eval(), mr.EpisodeSampler(ds, ways=3, shots=2, queries=2, seed=7)


def test_certify_report_on_a_protonet(protonet):
    learner, sampler = protonet
    res = certify(learner, sampler, episodes=4, sigma=0.25, samples=200, n0=20, alpha=0.01,
                  radii=(0.5, 0.0, 0.25), seed=3)
    acc = [r["certified_accuracy"] for r in res["radii"]]
    assert [r["radius"] for r in res["radii"]] == [0.0, 0.25, 0.5]
    assert all(a >= b for a, b in zip(acc, acc[1:]))  # non-increasing in the radius
    assert len(res["queries"]) == 4 * 3 * 2
    for q in res["queries"]:
        assert (q["class"] < 0) == (q["radius"] is None)
    right = [q for q in res["queries"] if q["class"] == q["label"]]
    assert acc[0] == pytest.approx(len(right) / len(res["queries"]))
    assert 0 <= res["abstention"] <= 1 and 0 <= res["clean_accuracy"] <= 1
    again = certify(learner, sampler, episodes=4, sigma=0.25, samples=200, n0=20, alpha=0.01,
                    radii=(0.5, 0.0, 0.25), seed=3)
    assert again == res  # a pure function of the seed


def _smoothed_pgd(learner, sx, sy, x, label, sigma, eps, steps=6, draws=32, seed=0):
    """PGD-L2 on the smoothed classifier's expected softmax (Salman et al.'s estimate),
    within an L2 ball of radius eps around x."""
    gen = torch.Generator().manual_seed(seed)
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        noisy = (x + delta)[None] + sigma * torch.randn((draws, *x.shape), generator=gen)
        logits = learner(sx, sy, noisy.clamp(0, 1))
        loss = -torch.log(torch.softmax(logits, 1)[:, label].mean() + 1e-12)
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + (eps / 4) * grad / (grad.norm() + 1e-12)
            delta = delta * min(1.0, eps / (float(delta.norm()) + 1e-12))
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def test_pgd_within_a_certified_radius_does_not_change_the_smoothed_class(protonet):
    learner, sampler = protonet
    sigma, checked = 0.25, 0
    for e in range(3):
        ep = sampler.sample(e)
        sx, sy = ep.support_x, ep.support_y
        classify = episode_classifier(learner, sx, sy, "cpu")
        gen = torch.Generator().manual_seed(100 + e)
        classes, radii = certify_queries(classify, ep.query_x, 3, sigma, 50, 500, 0.001, gen)
        for q in torch.nonzero(classes >= 0).flatten().tolist():
            adv = _smoothed_pgd(learner, sx, sy, ep.query_x[q], int(classes[q]), sigma,
                                0.9 * float(radii[q]), seed=e)
            assert float((adv - ep.query_x[q]).norm()) <= 0.9 * float(radii[q]) + 1e-4
            counts = smoothed_counts(classify, adv[None], 3, sigma, 500,
                                     torch.Generator().manual_seed(200 + q))
            assert int(counts.argmax()) == int(classes[q])
            checked += 1
    assert checked >= 3


def test_bad_arguments_are_named(protonet):
    learner, sampler = protonet
    for kw, err, words in [({"sigma": 0.0}, ValueError, "sigma"),
                           ({"samples": 0}, ValueError, "samples"),
                           ({"n0": 1.5}, TypeError, "n0"),
                           ({"alpha": 0.7}, ValueError, "alpha"),
                           ({"episodes": 0}, ValueError, "episodes"),
                           ({"radii": []}, TypeError, "radii"),
                           ({"radii": [-1.0]}, ValueError, "radii"),
                           ({"radii": "0.5"}, TypeError, "radii"),
                           ({"progress": 1}, TypeError, "progress")]:
        with pytest.raises(err, match=words):
            certify(learner, sampler, **kw)
    assert math.isfinite(clopper_pearson_lower(1, 2, 0.5 - 1e-9))
    assert 0 < clopper_pearson_lower(1, 10**8, 0.5) < 1e-8  # no sum over 10**8 terms
    with pytest.raises(ValueError, match="trials"):
        clopper_pearson_lower(1, 10**8 + 1, 0.5)


def test_the_suites_certified_rows_are_certify_on_the_same_episodes(runs):
    from _runs import tiny_suite

    from metarobust.episodes import EpisodeSampler
    from metarobust.robust.certify import Smoothing
    from metarobust.robust.report import format_table
    from metarobust.train import load_dataset, load_run

    run_a, _ = runs
    smoothing = Smoothing(sigma=0.3, samples=60, n0=10, alpha=0.01, episodes=3)
    res = tiny_suite(run_a, grid={"clean": [0], "certified_l2": [0.4, 0, 0.2, 0.9]}, seed=11,
                     smoothing=smoothing)
    # 60 samples certify at most 0.3 * Phi^-1(0.01 ** (1 / 60)) = 0.434: 0.9 is skipped
    assert [s["family"] for s in res["skipped"]] == ["certified_l2"]
    assert "certify at most 0.434" in res["skipped"][0]["reason"]
    rows = [r for r in res["rows"] if r["family"] == "certified_l2"]
    assert [r["strength"] for r in rows] == [0.0, 0.2, 0.4]
    assert all(r["episodes"] == 3 and "sigma 0.3" in r["setting"] for r in rows)
    assert res["smoothing"]["samples"] == 60
    assert "(certified_l2: 3)" in format_table([res])
    learner = load_run(run_a)
    cfg = learner.config
    sampler = EpisodeSampler(load_dataset(cfg, "test", "test"), ways=cfg.test_ways,
                             shots=cfg.test_shots, queries=cfg.test_queries, seed=11,
                             dtype="float32")
    alone = certify(learner, sampler, episodes=3, sigma=0.3, samples=60, n0=10, alpha=0.01,
                    radii=(0, 0.2, 0.4), seed=11)
    for row, want in zip(rows, alone["radii"]):
        assert row["accuracy"] == pytest.approx(want["certified_accuracy"])
        assert row["ci95"] == pytest.approx(want["ci95"])
    with pytest.raises(TypeError, match="smoothing: expected"):
        tiny_suite(run_a, grid={"certified_l2": [0]}, smoothing={"sigma": 0.3})
    with pytest.raises(ValueError, match="sigma"):
        Smoothing(sigma=-1)


def test_the_largest_certifiable_radius_is_the_all_agree_bound(protonet):
    from metarobust.robust.certify import max_certifiable_radius

    for sigma, n, alpha in ((0.25, 500, 0.001), (0.5, 100000, 0.001), (0.1, 10, 0.05)):
        want = sigma * scipy_stats.norm.ppf(alpha ** (1 / n))
        assert max_certifiable_radius(sigma, n, alpha) == pytest.approx(want, rel=1e-9)
    learner, sampler = protonet
    res = certify(learner, sampler, episodes=1, sigma=0.25, samples=30, n0=5, alpha=0.01,
                  radii=(0.1, 0.5), seed=0)
    top = res["max_certifiable_radius"]
    assert top == pytest.approx(0.25 * scipy_stats.norm.ppf(0.01 ** (1 / 30)))
    assert [r["certifiable"] for r in res["radii"]] == [True, False]
    assert all(q["radius"] is None or q["radius"] <= top + 1e-12 for q in res["queries"])
