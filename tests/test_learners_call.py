"""The learner's call, ``learner(support_x, support_y, query_x)``: differentiable logits for
one task or a batch, with any nn.Module backbone, checked against ``meta_backward``'s
gradients, ``query_logits``' values and finite differences; and a training loop of one's
own built from the sampler, a learner and Adam."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, grads, image_batch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import metarobust as mr
from metarobust.learners import MAML, ProtoNet

SIDE = 8
MAML_KINDS = [(v, o) for v in ("maml", "metasgd", "anil") for o in ("second", "first")]


def user_net(seed: int = 0) -> nn.Module:
    """A backbone as a user writes it: no out_features attribute, BatchNorm inside."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * (SIDE // 2) ** 2, 6))


def learner(kind: str, order: str = "second", **kw) -> mr.learners.Learner:
    if kind == "protonet":
        return ProtoNet(user_net(), **kw).double()
    return MAML(user_net(), inner_lr=0.3, inner_steps=2, test_inner_steps=3, order=order,
                variant=kind, ways=WAYS, input_shape=(1, SIDE, SIDE), path="loop",
                **kw).double()


ALL = [("protonet", "second"), *MAML_KINDS]


def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean over tasks of each task's mean query cross-entropy (meta_backward's loss)."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


@pytest.mark.parametrize("kind,order", ALL)
def test_the_call_gives_meta_backward_gradients_for_a_user_backbone(kind, order):
    b = image_batch(side=SIDE)
    lrn = learner(kind, order)
    lrn.train()
    out = lrn(b.support_x, b.support_y, b.query_x)
    assert out.shape == (3, WAYS * 2, WAYS) and out.requires_grad
    loss_of(out, b.query_y).backward()
    mine = grads(lrn)
    lrn.zero_grad()
    lrn.meta_backward(b, WAYS)
    ref = grads(lrn)
    assert mine.keys() == ref.keys() and len(ref) == len(list(lrn.parameters()))
    for name in ref:
        torch.testing.assert_close(mine[name], ref[name], rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("kind,order", ALL)
def test_one_task_and_a_batch_agree_and_eval_mode_matches_query_logits(kind, order):
    b = image_batch(side=SIDE, seed=1)
    lrn = learner(kind, order).eval()
    batched = lrn(b.support_x, b.support_y, b.query_x)
    for t in range(3):
        one = lrn(b.support_x[t], b.support_y[t], b.query_x[t])
        torch.testing.assert_close(one, batched[t], rtol=1e-10, atol=1e-10)
    ref = lrn.query_logits(b, WAYS)
    assert not ref.requires_grad  # query_logits is the detached variant
    torch.testing.assert_close(batched.detach(), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lrn.predict(b.support_x[0], b.support_y[0], b.query_x[0]),
                               ref[0], rtol=1e-10, atol=1e-10)


def test_second_order_maml_call_matches_finite_differences():
    """d loss / d head bias through two inner steps, against central differences."""
    b = image_batch(b=1, side=SIDE, seed=2)
    lrn = learner("maml", "second").train()
    bias = lrn.head.bias
    loss_of(lrn(b.support_x, b.support_y, b.query_x), b.query_y).backward()
    eps = 1e-6
    for k in range(WAYS):
        with torch.no_grad():
            bias[k] += eps
            hi = float(loss_of(lrn(b.support_x, b.support_y, b.query_x), b.query_y))
            bias[k] -= 2 * eps
            lo = float(loss_of(lrn(b.support_x, b.support_y, b.query_x), b.query_y))
            bias[k] += eps
        assert abs(float(bias.grad[k]) - (hi - lo) / (2 * eps)) < 1e-6


def test_maml_without_out_features_names_input_shape():
    with pytest.raises(ValueError, match="input_shape: a Sequential backbone has no int"):
        MAML(user_net(), ways=WAYS)
    with pytest.raises(ValueError, match="input_shape: the backbone fails on inputs"):
        MAML(user_net(), ways=WAYS, input_shape=(3, SIDE, SIDE))
    with pytest.raises(ValueError, match="input_shape: expected a tuple of ints"):
        MAML(user_net(), ways=WAYS, input_shape=(1, 0, SIDE))
    net = user_net()
    before = [t.clone() for t in net.state_dict().values()]
    lrn = MAML(net, ways=WAYS, input_shape=(1, SIDE, SIDE))
    assert lrn.head.in_features == 6  # the dry run left the BatchNorm statistics alone
    after = list(user_net().state_dict().values())
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_call_bad_input_is_named():
    b = image_batch(side=SIDE)
    lrn = learner("maml").eval()
    with pytest.raises(TypeError, match="support_y: expected a torch.Tensor"):
        lrn(b.support_x[0], [0, 1, 2], b.query_x[0])
    with pytest.raises(ValueError, match="ways: this MAML classifier has 3 outputs"):
        lrn(b.support_x[0][:4], torch.tensor([0, 1, 0, 1]), b.query_x[0])
    with pytest.raises(ValueError, match=r"support_x: expected images \(n, C, H, W\)"):
        lrn(b.support_x[0][:, 0], b.support_y[0], b.query_x[0][:, 0])
    with pytest.raises(ValueError, match="query_x: 2 tasks, support_x has 3"):
        lrn(b.support_x, b.support_y, b.query_x[:2])


# ---------------------------------------------------------------- predict's checks


@pytest.mark.parametrize("kind", ["protonet", "maml"])
def test_predict_refuses_0_255_floats_and_images_without_channels(kind):
    b = image_batch(side=SIDE)
    lrn = learner(kind).eval()
    sx, sy, qx = b.support_x[0], b.support_y[0], b.query_x[0]
    with pytest.raises(ValueError, match=r"support_x: float images must be in \[0, 1\].*255"):
        lrn.predict(sx * 255, sy, qx)
    with pytest.raises(ValueError, match=r"query_x: float images must be in \[0, 1\]"):
        lrn.predict(sx, sy, qx - 0.5)
    with pytest.raises(ValueError, match=r"expected images \(n, C, H, W\).*channel"):
        lrn.predict(sx[:, 0], sy, qx[:, 0])
    uint8 = (sx * 255).round().to(torch.uint8)  # the advice given: uint8 is taken
    assert lrn.predict(uint8, sy, qx).shape == (qx.shape[0], WAYS)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1.001, 1e6), at=st.integers(0, 5))
def test_any_float_image_above_one_is_refused(scale, at):
    b = image_batch(side=SIDE)
    lrn = learner("protonet").eval()
    sx = b.support_x[0].clone()
    sx[at, 0, 0, 0] = scale
    pattern = r"support_x: .* values in \[.*, " + re.escape(f"{scale:g}]")
    with pytest.raises(ValueError, match=pattern):
        lrn.predict(sx, b.support_y[0], b.query_x[0])


# ---------------------------------------------------------------- a loop of one's own


def test_a_training_loop_of_ones_own_lowers_the_loss():
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (20, 1, SIDE, SIDE))
    images = np.clip(protos.repeat(10, 0) + rng.normal(0, 40, (200, 1, SIDE, SIDE)), 0, 255)
    labels = np.repeat(np.arange(20), 10)
    sampler = mr.EpisodeSampler((images.astype(np.uint8), labels), ways=5, shots=1,
                                queries=5, seed=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 32), nn.ReLU(), nn.Linear(32, 16))
    lrn = ProtoNet(net)
    opt = torch.optim.Adam(lrn.parameters(), lr=1e-3)
    losses = []
    for step in range(60):
        ep = sampler.sample(step)
        logits = lrn(ep.support_x, ep.support_y, ep.query_x)
        loss = F.cross_entropy(logits, ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
