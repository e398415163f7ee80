"""SimpleShot (metarobust.learners.simpleshot): the logits against a NumPy nearest centroid
on CL2N features for each centering, the base mean's running update against its
definition (moving average and cumulative), its state_dict round trip, classes without
support items, and bad options and features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import SimpleShot


def linear_backbone(d: int = 6, side: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, d)).double()


def numpy_nearest_centroid(s: np.ndarray, y: np.ndarray, q: np.ndarray,
                           mean: np.ndarray) -> np.ndarray:
    """Minus squared distances of CL2N query features to CL2N class centroids."""
    def cl2n(x: np.ndarray) -> np.ndarray:
        x = x - mean
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    s, q = cl2n(s), cl2n(q)
    centroids = np.stack([s[y == k].mean(0) for k in range(WAYS)])
    return -((q[:, None, :] - centroids[None]) ** 2).sum(-1)


@pytest.mark.parametrize("centering", ["base", "support", "none"])
def test_logits_are_numpy_nearest_centroid_on_cl2n_features(centering):
    net = linear_backbone()
    learner = SimpleShot(net, centering=centering).double()
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 6)) + 0.5
    learner.observe_base_features(torch.from_numpy(base))
    batch = image_batch(b=2, shots=3, queries=2)
    learner.eval()
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s = net(batch.support_x[i]).detach().numpy()
        q = net(batch.query_x[i]).detach().numpy()
        mean = {"base": base.mean(0), "support": s.mean(0), "none": np.zeros(6)}[centering]
        ref = numpy_nearest_centroid(s, batch.support_y[i].numpy(), q, mean)
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-9, atol=1e-12)


def test_base_centering_before_any_observation_is_plain_l2n():
    net = linear_backbone()
    batch = image_batch(b=2)
    plain = SimpleShot(net, centering="base").double().query_logits(batch, WAYS)
    none = SimpleShot(net, centering="none").double().query_logits(batch, WAYS)
    torch.testing.assert_close(plain, none, rtol=0, atol=0)


def test_the_moving_average_follows_its_definition():
    learner = SimpleShot(linear_backbone(), base_momentum=0.25).double()
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(n, 6)) for n in (5, 3, 8)]
    for x in batches:
        learner.observe_base_features(torch.from_numpy(x))
    ref = batches[0].mean(0)  # started at the first batch's mean
    for x in batches[1:]:
        ref = 0.75 * ref + 0.25 * x.mean(0)
    np.testing.assert_allclose(learner.base_mean.numpy(), ref, rtol=1e-12)
    assert int(learner.base_count) == 16


def test_the_cumulative_mean_is_the_mean_of_every_vector():
    learner = SimpleShot(linear_backbone(), base_momentum=None)
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(n, 6)).astype(np.float32) for n in (5, 1, 9)]
    for x in batches:
        learner.observe_base_features(torch.from_numpy(x))
    ref = np.concatenate(batches).astype(np.float64).mean(0)
    assert learner.base_mean.dtype == torch.float32  # the learner's dtype
    np.testing.assert_allclose(learner.base_mean.numpy(), ref, rtol=1e-6, atol=1e-7)


def test_the_base_mean_survives_a_state_dict_round_trip():
    learner = SimpleShot(linear_backbone()).double()
    learner.observe_base_features(torch.randn(10, 6, dtype=torch.float64) + 1.0)
    fresh = SimpleShot(linear_backbone()).double()
    assert fresh.base_mean.numel() == 0
    fresh.load_state_dict(learner.state_dict())
    torch.testing.assert_close(fresh.base_mean, learner.base_mean, rtol=0, atol=0)
    assert int(fresh.base_count) == 10
    batch = image_batch()
    torch.testing.assert_close(fresh.query_logits(batch, WAYS),
                               learner.query_logits(batch, WAYS), rtol=0, atol=0)
    # an unobserved state loads into an observed learner: back to plain L2N
    learner.load_state_dict(SimpleShot(linear_backbone()).double().state_dict())
    assert learner.base_mean.numel() == 0 and int(learner.base_count) == 0


def test_a_class_without_support_items_is_never_predicted():
    learner = SimpleShot(linear_backbone()).double()
    batch = image_batch(b=2, shots=2)
    sy = batch.support_y.clone()
    sy[0][sy[0] == 2] = 0  # task 0 loses class 2
    out = learner.query_logits(batch._replace(support_y=sy), WAYS)
    assert bool(torch.isinf(out[0, :, 2]).all()) and bool(torch.isfinite(out[0, :, :2]).all())
    assert bool(torch.isfinite(out[1]).all())


@pytest.mark.parametrize("kw, exc, words", [
    (dict(centering="mean"), ValueError, "centering: expected one of base, support, none; "
                                         "got 'mean'"),
    (dict(centering=None), ValueError, "centering: expected one of"),
    (dict(base_momentum=0.0), ValueError, "base_momentum: must be in (0, 1], got 0.0"),
    (dict(base_momentum=1.5), ValueError, "base_momentum: must be in (0, 1], got 1.5"),
    (dict(base_momentum=float("nan")), ValueError, "base_momentum: must be"),
    (dict(base_momentum="0.1"), TypeError, "base_momentum: expected a real number"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        SimpleShot(linear_backbone(), **kw)


def test_bad_base_features_are_named():
    learner = SimpleShot(linear_backbone())
    with pytest.raises(TypeError, match="features: expected a float tensor"):
        learner.observe_base_features(torch.ones(3, 6, dtype=torch.int64))
    with pytest.raises(TypeError, match="features: expected a float tensor"):
        learner.observe_base_features(np.ones((3, 6)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"features: expected shape \(N, D\) with N >= 1, "
                                         r"got \(3, 6, 1\)"):
        learner.observe_base_features(torch.ones(3, 6, 1))
    with pytest.raises(ValueError, match="features: holds NaN or inf"):
        learner.observe_base_features(torch.full((2, 6), float("nan")))
    learner.observe_base_features(torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"features: expected shape \(N, 6\), got \(2, 5\)"):
        learner.observe_base_features(torch.ones(2, 5))
    assert int(learner.base_count) == 2  # the refused batches left no trace


def test_a_base_mean_of_another_width_is_refused_at_use():
    learner = SimpleShot(linear_backbone(d=6)).double()
    learner.observe_base_features(torch.ones(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="base_mean: 4 features observed in pre-training, "
                                         "the backbone gives 6"):
        learner.query_logits(image_batch(), WAYS)
