"""Matching Networks (metarobust.learners.matching): the attention logits against a
per-query loop written here (cosine, softmax over the support, class sums, log), the
full-context embeddings against the paper's equations run item by item, an empty class,
gradients, and bad options."""

from __future__ import annotations

import math

import pytest
import torch
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import MatchingNet


def backbone(d: int = 5) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, d)).double()
    net.out_features = d  # type: ignore[assignment]
    return net


def reference_logits(g: torch.Tensor, sy: torch.Tensor, f: torch.Tensor, ways: int,
                     scale: float) -> torch.Tensor:
    out = torch.empty(f.shape[0], ways, dtype=f.dtype)
    for j in range(f.shape[0]):
        cos = torch.stack([torch.dot(f[j], g[i]) / (f[j].norm() * g[i].norm())
                           for i in range(g.shape[0])])
        att = torch.exp(scale * cos) / torch.exp(scale * cos).sum()
        for k in range(ways):
            p = att[sy == k].sum()
            out[j, k] = torch.log(p) if p > 0 else -math.inf
    return out


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_logits_are_the_log_attention_over_each_class(scale):
    net = backbone()
    learner = MatchingNet(net, scale=scale).double()
    batch = image_batch(b=2, shots=2, queries=3)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        ref = reference_logits(net(batch.support_x[i]), batch.support_y[i],
                               net(batch.query_x[i]), WAYS, scale)
        torch.testing.assert_close(out[i], ref, rtol=1e-9, atol=1e-9)
    # the probabilities of a query sum to one
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 9, dtype=torch.float64))


def test_a_class_without_support_items_is_never_predicted_and_gradients_stay_finite():
    learner = MatchingNet(backbone()).double()
    batch = image_batch(b=1, shots=2)
    sy = batch.support_y.clone()
    sy[sy == 2] = 0  # class 2 emptied
    out = learner(batch.support_x, sy, batch.query_x, ways=WAYS)
    assert bool(torch.isneginf(out[..., 2]).all()) and bool(torch.isfinite(out[..., :2]).all())
    out[..., :2].sum().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in learner.parameters())


def test_full_context_embeddings_follow_the_equations():
    net = backbone(4)
    learner = MatchingNet(net, fce=True, fce_steps=3, scale=5.0).double()
    learner.eval()
    batch = image_batch(b=1, shots=2, queries=2)
    out = learner.query_logits(batch, WAYS)[0]
    ctx = learner.context
    gp, fp = net(batch.support_x[0]), net(batch.query_x[0])
    # g(x_i) = g'(x_i) + forward state + backward state of a bidirectional LSTM
    lstm = ctx.support_lstm
    fwd, bwd = [], []
    h = c = torch.zeros(1, 4, dtype=torch.float64)
    cell_f = nn.LSTMCell(4, 4).double()
    cell_b = nn.LSTMCell(4, 4).double()
    with torch.no_grad():
        for cell, sfx in ((cell_f, ""), (cell_b, "_reverse")):
            cell.weight_ih.copy_(getattr(lstm, f"weight_ih_l0{sfx}"))
            cell.weight_hh.copy_(getattr(lstm, f"weight_hh_l0{sfx}"))
            cell.bias_ih.copy_(getattr(lstm, f"bias_ih_l0{sfx}"))
            cell.bias_hh.copy_(getattr(lstm, f"bias_hh_l0{sfx}"))
    for i in range(gp.shape[0]):
        h, c = cell_f(gp[i:i + 1], (h, c))
        fwd.append(h[0])
    h = c = torch.zeros(1, 4, dtype=torch.float64)
    for i in reversed(range(gp.shape[0])):
        h, c = cell_b(gp[i:i + 1], (h, c))
        bwd.insert(0, h[0])
    g = gp + torch.stack(fwd) + torch.stack(bwd)
    # f(q): h_k = LSTM(f'(q), h_{k-1} + r_{k-1}) + f'(q), r_k = attention read-out of g
    fs = []
    for j in range(fp.shape[0]):
        h = r = c = torch.zeros(4, dtype=torch.float64)
        for _ in range(3):
            h, c = ctx.query_cell(fp[j][None], ((h + r)[None], c[None]))
            h, c = h[0] + fp[j], c[0]
            a = torch.softmax(g @ h, 0)
            r = a @ g
        fs.append(h)
    ref = reference_logits(g, batch.support_y[0], torch.stack(fs), WAYS, 5.0)
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-8)


def test_gradients_reach_the_backbone_and_the_context_lstms():
    learner = MatchingNet(backbone(), fce=True).double()
    learner.meta_backward(image_batch(), WAYS)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0)
               for p in learner.parameters())


@pytest.mark.parametrize("kw, exc, words", [
    (dict(scale=0.0), ValueError, "scale: must be finite and > 0, got 0.0"),
    (dict(fce="yes"), TypeError, "fce: expected a bool, got 'yes'"),
    (dict(fce=True, fce_steps=0), ValueError, "fce_steps: must be >= 1, got 0"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words):
        MatchingNet(backbone(), **kw)
    with pytest.raises(ValueError, match="input_shape: a Flatten backbone has no int"):
        MatchingNet(nn.Flatten(), fce=True)
    assert MatchingNet(nn.Flatten(), fce=True, input_shape=(1, 2, 2)).context is not None
    with pytest.raises(TypeError, match="backbone: expected an nn.Module, got int"):
        MatchingNet(3)  # type: ignore[arg-type]
