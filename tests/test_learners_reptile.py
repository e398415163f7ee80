"""Reptile (metarobust.learners.reptile): the meta-update against its definition written
out here (SGD steps on each task's episode, then theta + eps (mean phi - theta)), the same
on the vmap, loop and threads paths, the trainer's optimiser for it, evaluation by
adaptation on the support set, and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import MAML, Reptile
from metarobust.train import build_optimizer


def net() -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.Tanh())
    body.out_features = 5  # type: ignore[assignment]
    return body


def by_definition(learner: Reptile, batch, steps: int, lr: float,
                  eps: float) -> dict[str, torch.Tensor]:
    """theta + eps (mean_i phi_i - theta), phi_i: ``steps`` SGD steps on task i's support
    and query items, written with plain autograd on copies of the parameters."""
    theta = {n: p.detach().clone() for n, p in learner.net.named_parameters()}
    phis = []
    for i in range(batch.support_x.shape[0]):
        x = torch.cat([batch.support_x[i], batch.query_x[i]])
        y = torch.cat([batch.support_y[i], batch.query_y[i]])
        w1, b1 = theta["body.1.weight"].clone(), theta["body.1.bias"].clone()
        w2, b2 = theta["head.weight"].clone(), theta["head.bias"].clone()
        for _ in range(steps):
            ps = [t.requires_grad_(True) for t in (w1, b1, w2, b2)]
            out = F.linear(torch.tanh(F.linear(x.flatten(1), ps[0], ps[1])), ps[2], ps[3])
            gs = torch.autograd.grad(F.cross_entropy(out, y), ps)
            w1, b1, w2, b2 = (p.detach() - lr * g for p, g in zip(ps, gs))
        phis.append({"body.1.weight": w1, "body.1.bias": b1, "head.weight": w2,
                     "head.bias": b2})
    return {n: theta[n] + eps * (torch.stack([p[n] for p in phis]).mean(0) - theta[n])
            for n in theta}


@pytest.mark.parametrize("path", ["vmap", "loop", "threads"])
def test_meta_update_is_the_interpolation_towards_the_adapted_parameters(path):
    learner = Reptile(net(), inner_lr=0.3, inner_steps=3, ways=WAYS, path=path).double()
    batch = image_batch(b=3, shots=2, queries=2)
    expected = by_definition(learner, batch, steps=3, lr=0.3, eps=0.25)
    opt = build_optimizer(learner, 0.25, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD)
    opt.zero_grad()
    stats = learner.meta_backward(batch, WAYS)
    opt.step()
    for n, p in learner.net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-10, atol=1e-12)
    assert 0.0 <= stats["accuracy"] <= 1.0 and stats["loss"] > 0


def test_chunks_give_the_same_update():
    batch = image_batch(b=4, shots=1, queries=2)
    grads = []
    for chunk in (None, 1, 3):
        learner = Reptile(net(), inner_steps=2, ways=WAYS, path="loop",
                          chunk_size=chunk).double()
        learner.meta_backward(batch, WAYS)
        grads.append([p.grad.clone() for p in learner.parameters()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_evaluation_adapts_on_the_support_set_as_maml():
    reptile = Reptile(net(), inner_lr=0.2, inner_steps=4, test_inner_steps=2, ways=WAYS,
                      path="loop").double()
    maml = MAML(net(), inner_lr=0.2, inner_steps=2, ways=WAYS, path="loop").double()
    maml.load_state_dict(reptile.state_dict())
    batch = image_batch(b=2)
    torch.testing.assert_close(reptile.query_logits(batch, WAYS),
                               maml.query_logits(batch, WAYS))
    assert isinstance(build_optimizer(maml, 1e-3, torch.device("cpu")), torch.optim.Adam)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="inner_steps: must be >= 0, got -1"):
        Reptile(net(), inner_steps=-1, ways=WAYS)
    with pytest.raises(ValueError, match="inner_lr: must be finite and >= 0"):
        Reptile(net(), inner_lr=-0.1, ways=WAYS)
    with pytest.raises(ValueError, match="ways: MAML's classifier needs a fixed number"):
        Reptile(net())
    with pytest.raises(ValueError, match="path: expected one of"):
        Reptile(net(), ways=WAYS, path="gpu")
    learner = Reptile(net(), ways=WAYS).double()
    with pytest.raises(RuntimeError, match="gradients are disabled"), torch.no_grad():
        learner.meta_backward(image_batch(), WAYS)
    with pytest.raises(ValueError, match="ways: this MAML classifier has 3 outputs"):
        learner.meta_backward(image_batch(), 4)
