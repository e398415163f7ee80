"""Relation Networks (metarobust.learners.relation): relation scores against a loop over
(query, class) pairs written here (class sums, concatenation, the relation module one pair
at a time), the paper's MSE loss, the conv relation module over Sung et al.'s encoder maps
and the MLP one over flat features, gradients, and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import RelationNet
from metarobust.models import build_model


def flat_backbone() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6)).double()
    net.out_features = 6  # type: ignore[assignment]
    return net


def reference_scores(learner: RelationNet, sx, sy, qx) -> torch.Tensor:
    """Eval mode (BatchNorm from running statistics): one pair at a time."""
    net, rel = learner.backbone, learner.relation
    es, eq = net(sx), net(qx)
    out = torch.empty(qx.shape[0], WAYS, dtype=es.dtype)
    for k in range(WAYS):
        cls = sum(es[i] for i in range(es.shape[0]) if int(sy[i]) == k)
        for j in range(qx.shape[0]):
            out[j, k] = rel(torch.cat([eq[j], cls], 0)[None])[0, 0]
    return out


@pytest.mark.parametrize("kind", ["flat", "maps"])
def test_scores_match_pairs_scored_one_at_a_time(kind):
    if kind == "flat":
        learner = RelationNet(flat_backbone()).double()
    else:
        torch.manual_seed(0)
        net = build_model("conv4_sung", 1, 8, filters=3)
        learner = RelationNet(net, input_shape=(1, 8, 8)).double()
        assert learner.feature_shape == (3, 2, 2)
    learner.eval()
    batch = image_batch(b=2, shots=2, queries=2)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        with torch.no_grad():
            ref = reference_scores(learner, batch.support_x[i], batch.support_y[i],
                                   batch.query_x[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-9, atol=1e-9)


def test_loss_is_the_mse_of_sigmoid_scores_against_one_hot_targets():
    learner = RelationNet(flat_backbone()).double()
    batch = image_batch(b=2, shots=1, queries=2)
    stats = learner.meta_backward(batch, WAYS)
    learner.zero_grad()
    with torch.no_grad():
        learner.train()
        out = learner(batch.support_x, batch.support_y, batch.query_x)
    ref = ((torch.sigmoid(out) - F.one_hot(batch.query_y, WAYS).double()) ** 2).mean()
    assert stats["loss"] == pytest.approx(float(ref), rel=1e-9)
    acc = (out.argmax(-1) == batch.query_y).double().mean()
    assert stats["accuracy"] == pytest.approx(float(acc))


def test_gradients_reach_the_encoder_and_the_relation_module():
    torch.manual_seed(1)
    learner = RelationNet(build_model("conv4_sung", 1, 8, filters=3),
                          input_shape=(1, 8, 8)).double()
    learner.meta_backward(image_batch(), WAYS)
    assert all(p.grad is not None for p in learner.parameters())
    assert float(learner.relation[0].weight.grad.abs().sum()) > 0


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="hidden: must be in"):
        RelationNet(flat_backbone(), hidden=0)
    with pytest.raises(TypeError, match="hidden: expected an int, got 2.0"):
        RelationNet(flat_backbone(), hidden=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_shape: a Flatten backbone has no int"):
        RelationNet(nn.Flatten())
    with pytest.raises(ValueError, match=r"input_shape: expected a tuple of ints >= 1"):
        RelationNet(nn.Flatten(), input_shape=(1, 0, 8))
    with pytest.raises(ValueError, match=r"input_shape: the backbone fails on inputs"):
        RelationNet(nn.Conv2d(3, 2, 3), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"backbone: expected \(N, D\) features or"):
        RelationNet(nn.Identity(), input_shape=(1, 8))
