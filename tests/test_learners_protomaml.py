"""Proto-MAML (metarobust.learners.protomaml): the head initialised from the prototypes
(zero inner steps: the prototypical network's logits up to a per-query constant), the
adapted logits and meta-gradients against the inner loop written out here with plain
autograd (first and second order), the same on the vmap and loop paths, and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, grads, image_batch
from torch import nn

from metarobust.learners import ProtoMAML


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.Tanh())


def by_hand(learner: ProtoMAML, batch, steps: int, lr: float, second: bool) -> torch.Tensor:
    """Mean query loss over the tasks, the inner loop written out: head from prototypes,
    then SGD on the support loss over the body and the head together."""
    w0, b0 = learner.net.body[1].weight, learner.net.body[1].bias
    losses = []
    for i in range(batch.support_x.shape[0]):
        sx, sy = batch.support_x[i].flatten(1), batch.support_y[i]
        fs = torch.tanh(F.linear(sx, w0, b0))
        protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])
        # the inner loop's variables: the body (a copy: its inner gradient holds the head
        # fixed) and the head made from the prototypes
        ps = [w0.clone(), b0.clone(), 2 * protos, -(protos ** 2).sum(1)]
        for _ in range(steps):
            out = F.linear(torch.tanh(F.linear(sx, ps[0], ps[1])), ps[2], ps[3])
            gs = torch.autograd.grad(F.cross_entropy(out, sy), ps, create_graph=second)
            ps = [p - lr * g for p, g in zip(ps, gs)]
        q = torch.tanh(F.linear(batch.query_x[i].flatten(1), ps[0], ps[1]))
        losses.append(F.cross_entropy(F.linear(q, ps[2], ps[3]), batch.query_y[i]))
    return torch.stack(losses).mean()


def test_zero_steps_give_the_prototypical_logits_up_to_a_per_query_constant():
    learner = ProtoMAML(net(), inner_steps=0, ways=WAYS, path="loop").double()
    batch = image_batch(b=2, shots=3, queries=2)
    out = learner.query_logits(batch, WAYS)
    body = learner.net.body
    for i in range(2):
        fs, fq = body(batch.support_x[i]), body(batch.query_x[i])
        protos = torch.stack([fs[batch.support_y[i] == k].mean(0) for k in range(WAYS)])
        proto_logits = -torch.cdist(fq, protos) ** 2
        diff = out[i] - proto_logits  # |f(q)|^2 for every class
        torch.testing.assert_close(diff, (fq ** 2).sum(1, keepdim=True).expand(-1, WAYS))


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_meta_gradients_match_the_inner_loop_written_out(order, path):
    learner = ProtoMAML(net(), inner_lr=0.5, inner_steps=2, order=order, ways=WAYS,
                        path=path).double()
    batch = image_batch(b=3, shots=2, queries=2)
    stats = learner.meta_backward(batch, WAYS)
    got = grads(learner)
    learner.zero_grad()
    if order == "first":
        # first order: each inner gradient is a constant; the graph to the parameters goes
        # through the prototypes and the identity of each step
        loss = _first_order(learner, batch)
    else:
        loss = by_hand(learner, batch, steps=2, lr=0.5, second=True)
    loss.backward()
    assert stats["loss"] == pytest.approx(float(loss.detach()), rel=1e-9)
    for n, g in grads(learner).items():
        torch.testing.assert_close(got[n], g, rtol=1e-8, atol=1e-10)
    assert set(got) == {"net.body.1.weight", "net.body.1.bias"}


def _first_order(learner: ProtoMAML, batch) -> torch.Tensor:
    w0, b0 = learner.net.body[1].weight, learner.net.body[1].bias
    losses = []
    for i in range(batch.support_x.shape[0]):
        sx, sy = batch.support_x[i].flatten(1), batch.support_y[i]
        fs = torch.tanh(F.linear(sx, w0, b0))
        protos = torch.stack([fs[sy == k].mean(0) for k in range(WAYS)])
        ps = [w0, b0, 2 * protos, -(protos ** 2).sum(1)]
        for _ in range(2):
            leaves = [p.detach().requires_grad_(True) for p in ps]
            out = F.linear(torch.tanh(F.linear(sx, leaves[0], leaves[1])), leaves[2],
                           leaves[3])
            gs = torch.autograd.grad(F.cross_entropy(out, sy), leaves)
            ps = [p - 0.5 * g for p, g in zip(ps, gs)]
        q = torch.tanh(F.linear(batch.query_x[i].flatten(1), ps[0], ps[1]))
        losses.append(F.cross_entropy(F.linear(q, ps[2], ps[3]), batch.query_y[i]))
    return torch.stack(losses).mean()


def test_meta_gradient_matches_finite_differences():
    learner = ProtoMAML(net(), inner_lr=0.5, inner_steps=1, order="second", ways=WAYS,
                        path="loop").double()
    batch = image_batch(b=1)
    w = learner.net.body[1].bias

    def loss(bias: torch.Tensor) -> torch.Tensor:
        params = {**dict(learner.named_parameters()), "net.body.1.bias": bias}
        out = torch.func.functional_call(learner, params, (batch.support_x, batch.support_y,
                                                           batch.query_x))
        return F.cross_entropy(out[0], batch.query_y[0])

    learner.train()
    assert torch.autograd.gradcheck(loss, (w.detach().clone().requires_grad_(True),))


def test_any_number_of_ways():
    learner = ProtoMAML(net(), inner_steps=1, path="loop").double()
    assert learner.ways is None
    for ways in (2, 3):
        batch = image_batch(b=2)
        keep = batch.support_y < ways
        sx, sy = batch.support_x[keep].reshape(2, -1, 1, 8, 8), batch.support_y[keep].reshape(2, -1)
        keep = batch.query_y < ways
        qx = batch.query_x[keep].reshape(2, -1, 1, 8, 8)
        assert learner(sx, sy, qx).shape == (2, qx.shape[1], ways)
        assert learner.predict(sx[0], sy[0], qx[0]).shape == (qx.shape[1], ways)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="ways: MAML's classifier needs a fixed number"):
        ProtoMAML(net(), ways=0)
    with pytest.raises(ValueError, match="order: expected one of second, first; got 'third'"):
        ProtoMAML(net(), ways=WAYS, order="third")
    with pytest.raises(TypeError, match="inner_steps: expected an int, got float"):
        ProtoMAML(net(), ways=WAYS, inner_steps=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model: expected an nn.Module, got str"):
        ProtoMAML("conv4", ways=WAYS)  # type: ignore[arg-type]


def test_order_and_path_change_gradients_not_outputs():
    batch = image_batch(b=2)
    outs = []
    for path in ("loop", "vmap"):
        for order in ("first", "second"):
            learner = ProtoMAML(net(), inner_lr=0.5, inner_steps=2, order=order, ways=WAYS,
                                path=path).double()
            outs.append(learner(batch.support_x, batch.support_y, batch.query_x).detach())
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-10, atol=1e-12)
