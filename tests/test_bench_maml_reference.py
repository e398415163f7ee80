"""metarobust.bench.maml_reference: the learn2learn-style MAML computes MAML's meta-gradient
(the same as metarobust's MAML), in both styles and orders, and its module cloning keeps the
originals intact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metarobust.bench import maml_reference as mr
from metarobust.episodes import Episode
from metarobust.learners import MAML

WAYS, SHOTS, QUERIES, TASKS, SIDE, HIDDEN = 3, 2, 2, 3, 2, 5


class _Body(nn.Module):
    """A smooth body (no ReLU kinks, no BatchNorm): (n, 1, 2, 2) -> (n, HIDDEN)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(SIDE * SIDE, HIDDEN)
        self.out_features = HIDDEN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x.flatten(1)))


def _batch() -> Episode:
    g = torch.Generator().manual_seed(0)
    return Episode(
        support_x=torch.rand(TASKS, WAYS * SHOTS, 1, SIDE, SIDE, generator=g, dtype=torch.float64),
        support_y=torch.arange(WAYS).repeat_interleave(SHOTS).repeat(TASKS, 1),
        query_x=torch.rand(TASKS, WAYS * QUERIES, 1, SIDE, SIDE, generator=g,
                           dtype=torch.float64),
        query_y=torch.arange(WAYS).repeat_interleave(QUERIES).repeat(TASKS, 1),
        classes=torch.zeros(TASKS, WAYS, dtype=torch.int64),
    )


def _grads(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("order", mr.MAML_ORDERS)
@pytest.mark.parametrize("style", mr.ReferenceMAML.STYLES)
def test_reference_meta_gradient_equals_metarobust_maml(order, style):
    batch = _batch()
    torch.manual_seed(0)
    learner = MAML(_Body(), inner_lr=0.5, inner_steps=2, order=order, ways=WAYS,
                   path="loop").double()
    ref = mr.ReferenceMAML(copy.deepcopy(learner.net), inner_lr=0.5, inner_steps=2,
                           order=order, style=style)
    learner.meta_backward(batch, WAYS)
    loss = ref.meta_backward(batch, WAYS)
    want, got = _grads(learner.net), _grads(ref.net)
    assert set(got) == set(want) == {"body.fc.weight", "body.fc.bias", "head.weight",
                                     "head.bias"}
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12, msg=n)
    assert 0 < loss < 10


def test_first_order_drops_the_second_derivative():
    batch = _batch()
    torch.manual_seed(0)
    net = mr._RefClassifier(_Body(), nn.Linear(HIDDEN, WAYS)).double()
    grads = {}
    for order in mr.MAML_ORDERS:
        ref = mr.ReferenceMAML(copy.deepcopy(net), inner_lr=0.5, order=order)
        ref.meta_backward(batch)
        grads[order] = _grads(ref.net)
    assert not torch.allclose(grads["first"]["body.fc.weight"],
                              grads["second"]["body.fc.weight"], rtol=1e-4)


def test_clone_and_update_leave_the_original_module_alone():
    torch.manual_seed(0)
    net = mr._RefClassifier(_Body(), nn.Linear(HIDDEN, WAYS))
    x = torch.rand(4, 1, SIDE, SIDE)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    clone = mr._clone_module(net)
    assert clone is not net and clone.body is not net.body
    assert clone.body.fc.weight is not net.body.fc.weight
    torch.testing.assert_close(clone(x), net(x))
    params = list(clone.parameters())
    mr._update_module(clone, {id(p): torch.ones_like(p) for p in params})
    torch.testing.assert_close(clone.head.bias, net.head.bias + 1)
    clone(x).sum().backward()  # through the clone, back to the original parameters
    assert all(p.grad is not None for p in net.parameters())
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_bad_order_or_style_is_named():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="order"):
        mr.ReferenceMAML(net, order="third")
    with pytest.raises(ValueError, match="style"):
        mr.ReferenceMAML(net, style="higher")
