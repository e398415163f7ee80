"""ProtoNet (metarobust.learners.protonet): logits and loss against NumPy, robust prototypes
training, chunking (same gradients and BatchNorm statistics), any ways and shots at test
time, bad arguments, and a smoke training run on the glyphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _learners import WAYS, grads, image_batch
from torch import nn

import metarobust as mr
from metarobust.learners import ProtoNet, Task
from metarobust.models import build_model


class Flatten(nn.Module):
    out_features = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def numpy_logits(batch: Task, ways: int, metric: str = "sqeuclidean",
                 how: str = "mean") -> np.ndarray:
    sx, sy, qx = (t.numpy() for t in batch[:3])
    out = []
    for i in range(sx.shape[0]):
        agg = {"mean": np.mean, "median": np.median}[how]
        protos = np.stack([agg(sx[i][sy[i] == c], axis=0) for c in range(ways)])
        if metric == "sqeuclidean":
            d = ((qx[i][:, None, :] - protos[None]) ** 2).sum(-1)
        else:
            qn = qx[i] / np.linalg.norm(qx[i], axis=1, keepdims=True)
            pn = protos / np.linalg.norm(protos, axis=1, keepdims=True)
            d = 1 - qn @ pn.T
        out.append(-d)
    return np.stack(out)


def embedding_batch(b: int = 2, shots: int = 3, queries: int = 4, dim: int = 6) -> Task:
    g = torch.Generator().manual_seed(1)
    sy = torch.stack([torch.randperm(WAYS * shots, generator=g) % WAYS for _ in range(b)])
    qy = torch.stack([torch.randperm(WAYS * queries, generator=g) % WAYS for _ in range(b)])
    sx = torch.randn(b, WAYS * shots, dim, generator=g, dtype=torch.float64)
    qx = torch.randn(b, WAYS * queries, dim, generator=g, dtype=torch.float64)
    return Task(sx, sy, qx, qy)


@pytest.mark.parametrize("metric, how", [("sqeuclidean", "mean"), ("cosine", "mean"),
                                         ("sqeuclidean", "median")])
def test_protonet_matches_numpy(metric: str, how: str) -> None:
    batch = embedding_batch()
    learner = ProtoNet(Flatten(), metric=metric, prototype=how)
    logits = learner.query_logits(batch, WAYS)
    ref = numpy_logits(batch, WAYS, metric, how)
    np.testing.assert_allclose(logits.numpy(), ref, rtol=1e-10, atol=1e-12)
    # loss: mean over tasks of the mean query cross-entropy
    lse = np.log(np.exp(ref).sum(-1))
    picked = np.take_along_axis(ref, batch.query_y.numpy()[..., None], -1)[..., 0]
    x = batch.query_x.clone().requires_grad_(True)
    out = learner.meta_backward(Task(batch.support_x, batch.support_y, x, batch.query_y),
                                WAYS)
    assert out["loss"] == pytest.approx((lse - picked).mean(), rel=1e-10)
    acc = (ref.argmax(-1) == batch.query_y.numpy()).mean()
    assert out["accuracy"] == pytest.approx(acc)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("prototype", ["median", "trimmed_mean", "geometric_median"])
def test_protonet_robust_prototypes_train(prototype: str) -> None:
    torch.manual_seed(0)
    learner = ProtoNet(build_model("conv4_snell", 1, 16, filters=4), prototype=prototype)
    batch = image_batch(b=2, shots=5, queries=2, side=16)
    batch = Task(*(t.float() if t.is_floating_point() else t for t in batch))
    out = learner.meta_backward(batch, WAYS)
    assert np.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
    g = grads(learner)
    assert len(g) == len(list(learner.parameters()))
    assert all(torch.isfinite(t).all() for t in g.values())


def test_protonet_chunking_same_gradients_and_bn_stats() -> None:
    batch = image_batch(b=3, shots=2, queries=2, side=16)
    runs = []
    for chunk in (None, 1, 2):
        torch.manual_seed(0)
        learner = ProtoNet(build_model("conv4_snell", 1, 16, filters=3), chunk_size=chunk)
        learner.double().train()
        out = learner.meta_backward(batch, WAYS)
        runs.append((out, grads(learner), dict(learner.named_buffers())))
    for out, g, buf in runs[1:]:
        assert out["loss"] == pytest.approx(runs[0][0]["loss"], rel=1e-12)
        for n in g:
            torch.testing.assert_close(g[n], runs[0][1][n], rtol=1e-9, atol=1e-12)
        for n in buf:
            torch.testing.assert_close(buf[n], runs[0][2][n], rtol=1e-10, atol=1e-12)


def test_protonet_ways_and_shots_free() -> None:
    torch.manual_seed(0)
    learner = ProtoNet(build_model("conv4_snell", 1, 16, filters=3))
    learner.meta_backward(Task(*(t.float() if t.is_floating_point() else t
                                 for t in image_batch(side=16))), WAYS)
    learner.eval()
    g = torch.Generator().manual_seed(3)
    sx = torch.rand(10, 1, 16, 16, generator=g)
    sy = torch.arange(5).repeat(2)
    assert learner.predict(sx, sy, torch.rand(7, 1, 16, 16, generator=g)).shape == (7, 5)


def test_protonet_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        ProtoNet(Flatten(), metric="l1")
    with pytest.raises(ValueError, match="prototype"):
        ProtoNet(Flatten(), prototype="mode")
    with pytest.raises(ValueError, match="chunk_size"):
        ProtoNet(Flatten(), chunk_size=0)


def test_protonet_smoke_training() -> None:
    """30 Adam steps of 5-way 1-shot on the glyphs: the loss goes down (about 1 s)."""
    torch.manual_seed(0)
    ds = mr.data.glyphs(num_classes=20, per_class=10, image_size=28)
    sampler = mr.EpisodeSampler(ds, ways=5, shots=1, queries=5, seed=0)
    learner = ProtoNet(build_model("conv4_snell", 1, 28, filters=32)).train()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        opt.zero_grad()
        losses.append(learner.meta_backward(sampler.sample_batch(step, 1), 5)["loss"])
        opt.step()
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses
    learner.eval()
    acc = learner.evaluate_batch(sampler.sample_batch(1000, 4), 5)
    assert acc.shape == (4,) and float(acc.mean()) > 0.4


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(trim=None), TypeError, "^trim: expected a real number"),  # '<=' not supported
    (dict(trim=0.5), ValueError, "^trim: must be in \\[0, 0.5\\)"),
    (dict(scale=None), TypeError, "^scale: expected a real number"),
    (dict(scale=True), TypeError, "^scale: expected a real number, got True"),
    (dict(scale=float("inf")), ValueError, "^scale: must be finite and > 0"),
    (dict(channels_last=None), TypeError, "^channels_last: expected a bool"),
    (dict(fuse_first_block="no"), TypeError, "^fuse_first_block: expected a bool"),
])
def test_bad_options_are_named(kwargs, error, words) -> None:
    with pytest.raises(error, match=words):
        ProtoNet(build_model("conv4_snell", 1, 16, filters=3), **kwargs)
