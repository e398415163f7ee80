"""MAML and its variants (metarobust.learners.maml) against independent references: finite
differences of the second-order meta-loss, the stop-gradient form of first-order MAML, vmap
and task-thread paths == loop path, the path chosen on the CPU, ANIL, per-task BatchNorm,
chunking, train and test inner steps, bad arguments, sinusoid regression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, grads, image_batch, tiny_conv_maml
from _nets import TanhNet
from torch import nn

import metarobust as mr
from metarobust.learners import MAML, Task
from metarobust.models import build_model

D, H = 4, 5


def vector_batch(b: int = 3, shots: int = 2, queries: int = 3, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(WAYS).repeat_interleave(shots).expand(b, -1).contiguous()
    qy = torch.arange(WAYS).repeat_interleave(queries).expand(b, -1).contiguous()
    sx = torch.randn(b, WAYS * shots, D, generator=g, dtype=torch.float64) + sy[..., None]
    qx = torch.randn(b, WAYS * queries, D, generator=g, dtype=torch.float64) + qy[..., None]
    return Task(sx, sy, qx, qy)


def tiny_maml(variant: str = "maml", order: str = "second", steps: int = 2,
              path: str = "loop", seed: int = 0, **kw) -> MAML:
    torch.manual_seed(seed)
    return MAML(TanhNet(D, H), inner_lr=0.5, inner_steps=steps, order=order, variant=variant,
                ways=WAYS, path=path, **kw).double()


def reference_meta_loss(p: dict[str, torch.Tensor], batch: Task, steps: int,
                        lrs: dict[str, torch.Tensor] | float) -> float:
    """Mean query loss after `steps` plain gradient steps, written out by hand."""

    def f(q: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ q["net.body.fc.weight"].T + q["net.body.fc.bias"])
        return h @ q["net.head.weight"].T + q["net.head.bias"]

    total = 0.0
    for i in range(batch.support_x.shape[0]):
        q = {k: v.detach().clone() for k, v in p.items()}
        for _ in range(steps):
            with torch.enable_grad():
                q = {k: v.requires_grad_(True) for k, v in q.items()}
                loss = F.cross_entropy(f(q, batch.support_x[i]), batch.support_y[i])
                g = torch.autograd.grad(loss, list(q.values()))
            q = {k: (v - (lrs[k] if isinstance(lrs, dict) else lrs) * gk).detach()
                 for (k, v), gk in zip(q.items(), g)}
        total += float(F.cross_entropy(f(q, batch.query_x[i]), batch.query_y[i]))
    return total / batch.support_x.shape[0]


@pytest.mark.parametrize("variant, path", [("maml", "loop"), ("maml", "vmap"),
                                           ("metasgd", "loop")])
def test_second_order_matches_finite_differences(variant: str, path: str) -> None:
    batch = vector_batch()
    learner = tiny_maml(variant, "second", steps=2, path=path)
    out = learner.meta_backward(batch, WAYS)
    params = {n: p.detach().clone() for n, p in learner.named_parameters()
              if n.startswith("net.")}
    lr_names = ["net." + n for n in learner._fast_names]
    lrs = ({n: a.detach().clone() for n, a in zip(lr_names, learner.inner_lrs)}
           if variant == "metasgd" else 0.5)
    assert out["loss"] == pytest.approx(reference_meta_loss(params, batch, 2, lrs), rel=1e-10)

    eps = 1e-6
    rng = np.random.default_rng(0)
    checked = 0
    targets = [(n, params, learner.get_parameter(n)) for n in params]
    if variant == "metasgd":
        targets += [(n, lrs, a) for n, a in zip(lr_names, learner.inner_lrs)]
    for name, table, param in targets:
        for flat in rng.choice(param.numel(), size=min(2, param.numel()), replace=False):
            idx = np.unravel_index(flat, param.shape)
            saved = table[name][idx].item()
            table[name][idx] = saved + eps
            up = reference_meta_loss(params, batch, 2, lrs)
            table[name][idx] = saved - eps
            down = reference_meta_loss(params, batch, 2, lrs)
            table[name][idx] = saved
            fd = (up - down) / (2 * eps)
            assert param.grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), name
            checked += 1
    assert checked >= 8

    # Not vacuous: the first-order gradient differs from the second-order one.
    fo = tiny_maml(variant, "first", steps=2)
    fo.meta_backward(batch, WAYS)
    w = "net.body.fc.weight"
    assert not torch.allclose(fo.get_parameter(w).grad, learner.get_parameter(w).grad,
                              rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_first_order_is_stop_gradient(path: str) -> None:
    batch = vector_batch()
    learner = tiny_maml("maml", "first", steps=2, path=path)
    out = learner.meta_backward(batch, WAYS)

    # Reference: adapted parameters computed without graph; the meta-gradient is the
    # gradient of the query loss at the adapted parameters, averaged over tasks.
    ref = tiny_maml("maml", "first", steps=2)
    names = [n for n, _ in ref.net.named_parameters()]
    total = {n: torch.zeros_like(p) for n, p in ref.net.named_parameters()}
    losses = []
    b = batch.support_x.shape[0]
    for i in range(b):
        q = {n: p.detach().clone() for n, p in ref.net.named_parameters()}
        for _ in range(2):
            q = {n: v.requires_grad_(True) for n, v in q.items()}
            loss = F.cross_entropy(torch.func.functional_call(ref.net, q, batch.support_x[i]),
                                   batch.support_y[i])
            g = torch.autograd.grad(loss, [q[n] for n in names])
            q = {n: (q[n] - 0.5 * gn).detach() for n, gn in zip(names, g)}
        q = {n: v.requires_grad_(True) for n, v in q.items()}
        loss = F.cross_entropy(torch.func.functional_call(ref.net, q, batch.query_x[i]),
                               batch.query_y[i])
        g = torch.autograd.grad(loss, [q[n] for n in names])
        loss = loss.detach()
        for n, gn in zip(names, g):
            total[n] += gn / b
        losses.append(loss.item())
    assert out["loss"] == pytest.approx(np.mean(losses), rel=1e-10)
    got = dict(learner.net.named_parameters())
    for n in names:
        torch.testing.assert_close(got[n].grad, total[n], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant, order, model", [
    ("maml", "second", "conv4_finn"), ("maml", "first", "conv4_finn"),
    ("metasgd", "second", "conv4_finn"), ("anil", "second", "conv4_finn"),
    ("anil", "first", "conv4_finn"),
    # The pooling form (Snell's), through vmap and double backward too.
    ("maml", "second", "conv4_snell")])
def test_vmap_equals_loop(variant: str, order: str, model: str) -> None:
    side = 8 if model == "conv4_finn" else 16
    batch = image_batch(side=side)
    results = {}
    for path in ("loop", "vmap", "threads"):
        learner = tiny_conv_maml(variant, order, path, model=model, side=side)
        out = learner.meta_backward(batch, WAYS)
        with torch.no_grad():  # evaluation adapts with inner gradients even so
            logits = learner.query_logits(batch, WAYS)
        results[path] = (out, grads(learner), logits)
    lo, lg, ll = results["loop"]
    expected = {n for n, _ in learner.named_parameters()}
    assert set(lg) == expected  # every meta-parameter gets a gradient
    for path in ("vmap", "threads"):
        vo, vg, vl = results[path]
        assert lo["loss"] == pytest.approx(vo["loss"], rel=1e-10)
        assert lo["accuracy"] == vo["accuracy"]
        assert lg.keys() == vg.keys()
        for n in lg:
            torch.testing.assert_close(vg[n], lg[n], rtol=1e-8, atol=1e-11, msg=f"{path} {n}")
        torch.testing.assert_close(vl, ll, rtol=1e-8, atol=1e-10)


def test_threads_path_independent_of_thread_count() -> None:
    batch = image_batch()
    saved = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            learner = tiny_conv_maml("maml", "second", "threads").float()
            fbatch = Task(batch.support_x.float(), batch.support_y, batch.query_x.float(),
                          batch.query_y)
            out = learner.meta_backward(fbatch, WAYS)
            results.append((out, grads(learner), learner.query_logits(fbatch, WAYS)))
    finally:
        torch.set_num_threads(saved)
    assert torch.get_num_threads() == saved  # workers' thread settings do not leak
    for out, g, logits in results[1:]:
        assert out == results[0][0]
        for n in g:
            assert torch.equal(g[n], results[0][1][n]), n
        assert torch.equal(logits, results[0][2])


def test_auto_path_on_cpu() -> None:
    conv = tiny_conv_maml("maml", "second", "auto")
    dense = tiny_maml(path="auto")
    x = torch.zeros(4, 3)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert conv._task_threads(x, 4) == 2 and not conv._use_vmap(x)
        assert conv._task_threads(x, 1) == 0  # one task: the plain loop
        assert dense._use_vmap(x) and dense._task_threads(x, 4) == 0  # no convolutions
        torch.set_num_threads(1)
        assert conv._task_threads(x, 4) == 0
    finally:
        torch.set_num_threads(saved)


def test_anil_adapts_only_the_head() -> None:
    learner = tiny_conv_maml("anil", "second", "loop")
    assert learner._fast_names == ["head.weight", "head.bias"]
    # With zero inner steps ANIL and MAML are the same network.
    batch = image_batch()
    a = tiny_conv_maml("anil", "second", "loop")
    m = tiny_conv_maml("maml", "second", "loop")
    a.inner_steps = m.inner_steps = 0
    assert a.meta_backward(batch, WAYS)["loss"] == pytest.approx(
        m.meta_backward(batch, WAYS)["loss"], rel=1e-12)


def test_batchnorm_never_mixes_tasks() -> None:
    batch = image_batch()
    learner = tiny_conv_maml("maml", "second", "vmap")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                   for m in learner.modules())
    before = learner.query_logits(batch, WAYS)
    changed = Task(batch.support_x.clone(), batch.support_y, batch.query_x.clone(),
                   batch.query_y)
    changed.support_x[1] = changed.support_x[1] * 3 + 1
    changed.query_x[1] = changed.query_x[1] * 2 - 0.5
    after = learner.query_logits(changed, WAYS)
    torch.testing.assert_close(after[0], before[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after[2], before[2], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(after[1], before[1])
    # Task 0 alone gives the same adapted result as task 0 inside the batch.
    alone = learner.query_logits(Task(*(t[:1] for t in batch)), WAYS)
    torch.testing.assert_close(alone[0], before[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_maml_chunking_same_gradients(path: str) -> None:
    batch = image_batch()
    outs = []
    for chunk in (None, 1):
        learner = tiny_conv_maml("metasgd", "second", path, chunk_size=chunk)
        outs.append((learner.meta_backward(batch, WAYS), grads(learner)))
    assert outs[0][0]["loss"] == pytest.approx(outs[1][0]["loss"], rel=1e-12)
    for n in outs[0][1]:
        torch.testing.assert_close(outs[0][1][n], outs[1][1][n], rtol=1e-10, atol=1e-13)


def test_train_and_test_inner_steps() -> None:
    batch = vector_batch()
    learner = tiny_maml(steps=1)
    learner.test_inner_steps = 0
    zero = learner.query_logits(batch, WAYS)
    with torch.no_grad():
        plain = learner.net(batch.query_x.reshape(-1, D)).reshape(zero.shape)
    torch.testing.assert_close(zero, plain)
    learner.test_inner_steps = 5
    acc5 = learner.evaluate_batch(batch, WAYS)
    assert acc5.shape == (3,)
    # evaluation works under no_grad (the inner loop still takes gradients)
    with torch.no_grad():
        torch.testing.assert_close(learner.evaluate_batch(batch, WAYS), acc5)
    learner.meta_backward(batch, WAYS)  # train steps untouched: 1


def test_maml_bad_ways() -> None:
    learner = tiny_maml()
    with pytest.raises(ValueError, match="3 outputs.*5-way"):
        learner.meta_backward(vector_batch(), 5)
    with pytest.raises(ValueError, match="ways"):
        MAML(TanhNet(D, H), ways=None)
    with pytest.raises(ValueError, match="variant"):
        MAML(TanhNet(D, H), ways=3, variant="reptile")
    with pytest.raises(ValueError, match="order"):
        MAML(TanhNet(D, H), ways=3, order="third")
    with pytest.raises(ValueError, match="path"):
        MAML(TanhNet(D, H), ways=3, path="gpu")
    bad = vector_batch()
    bad.support_y[0, 0] = 7
    with pytest.raises(ValueError, match="support_y.*0..2"):
        learner.meta_backward(bad, WAYS)


def test_maml_sinusoid_regression() -> None:
    tasks = mr.data.sinusoid(shots=5, queries=5, seed=0).sample_batch(0, 3)
    outs = {}
    for path in ("loop", "vmap"):
        torch.manual_seed(0)
        learner = MAML(build_model("mlp_sinusoid", 1, None), inner_lr=0.01, inner_steps=1,
                       task="regression", path=path)
        outs[path] = (learner.meta_backward(tasks, None), grads(learner))
    assert set(outs["loop"][0]) == {"loss", "mse"}
    assert outs["loop"][0]["loss"] == pytest.approx(outs["vmap"][0]["loss"], rel=1e-5)
    for n, g in outs["loop"][1].items():
        torch.testing.assert_close(outs["vmap"][1][n], g, rtol=1e-4, atol=1e-6)
    pred = learner.predict(tasks.support_x[0], tasks.support_y[0], tasks.query_x[0])
    assert pred.shape == (5, 1)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(inner_lr=None), TypeError, "^inner_lr: expected a real number"),  # '>=' unsupported
    (dict(inner_lr=True), TypeError, "^inner_lr: expected a real number, got True"),
    (dict(inner_lr=-1.0), ValueError, "^inner_lr: must be finite and >= 0"),
    (dict(outputs=None), ValueError, "^outputs: expected an int >= 1"),  # unused, not unchecked
    (dict(task="regression"), ValueError, "^ways: a regression MAML has no ways"),
    (dict(ways=2**31), ValueError, "^ways: a linear head of 4 x 2147483648 would take"),
    (dict(fuse_first_block=None), TypeError, "^fuse_first_block: expected a bool"),
])
def test_bad_options_are_named(kwargs, error, words) -> None:
    args = dict(ways=3) | kwargs
    with pytest.raises(error, match=words):
        MAML(build_model("conv4_finn", 1, 16, filters=4), **args)


def test_predict_names_support_y_when_its_ways_do_not_fit() -> None:
    # predict has no `ways` argument; the error used to name one
    learner = MAML(build_model("conv4_finn", 1, 16, filters=3), ways=3)
    with pytest.raises(ValueError, match="^support_y: this MAML classifier has 3 outputs"):
        learner.predict(torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1]),
                        torch.rand(2, 1, 16, 16))
