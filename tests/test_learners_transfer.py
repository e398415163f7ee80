"""The transfer learners (SimpleShot, Baseline++, Meta-Baseline, TIM) through the Learner
interface: the call for one task and a batch against query_logits and predict, chunked
batches against per-task calls, attack gradients reaching the query and support images,
meta_backward, BatchNorm's running statistics in eval mode, state_dict round trips, and
their pre-training attributes."""

from __future__ import annotations

import pytest
import torch
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import TIM, BaselinePP, MetaBaseline, SimpleShot, TransferLearner
from metarobust.robust.attacks import fgsm

SIDE = 8
KINDS = ["simpleshot", "baseline_pp", "meta_baseline", "tim"]


# the head fits run many tiny operations: threads only add contention
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bn_net(seed: int = 0) -> nn.Module:
    """A backbone with BatchNorm, as the pre-training leaves it."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * (SIDE // 2) ** 2, 6))


def make(kind: str, seed: int = 0, **kw) -> TransferLearner:
    net = bn_net(seed)
    learner: TransferLearner
    if kind == "simpleshot":
        learner = SimpleShot(net, **kw)
    elif kind == "baseline_pp":
        learner = BaselinePP(net, finetune_epochs=5, **kw)
    elif kind == "meta_baseline":
        learner = MetaBaseline(net, **kw)
    else:
        learner = TIM(net, iterations=20, lr=1e-2, **kw)
    return learner.double()


def warm_running_stats(learner: TransferLearner) -> None:
    """Give BatchNorm running statistics that differ from the batch's, as pre-training
    would (here: a few forwards of shifted images in training mode)."""
    learner.train()
    with torch.no_grad():
        for s in range(3):
            learner.embed(image_batch(b=1, seed=10 + s).support_x[0] * 0.5 + 0.3)
    learner.eval()


def test_pretraining_attributes():
    assert (SimpleShot.pretrain_head, SimpleShot.episodic) == ("linear", False)
    assert (BaselinePP.pretrain_head, BaselinePP.episodic) == ("cosine", False)
    assert (MetaBaseline.pretrain_head, MetaBaseline.episodic) == ("linear", True)
    assert (TIM.pretrain_head, TIM.episodic) == ("linear", False)


@pytest.mark.parametrize("kind", KINDS)
def test_call_query_logits_and_predict_agree(kind):
    learner = make(kind)
    warm_running_stats(learner)
    b = image_batch(b=3, side=SIDE)
    with torch.no_grad():
        batch_out = learner(b.support_x, b.support_y, b.query_x)
    ref = learner.query_logits(b, WAYS)
    assert batch_out.shape == (3, 2 * WAYS, WAYS)
    torch.testing.assert_close(batch_out, ref, rtol=1e-10, atol=1e-10)
    for i in range(3):
        one = learner(b.support_x[i], b.support_y[i], b.query_x[i])
        torch.testing.assert_close(one, ref[i], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(learner.predict(b.support_x[i], b.support_y[i],
                                                   b.query_x[i]), ref[i],
                                   rtol=1e-10, atol=1e-10)
    acc = learner.evaluate_batch(b, WAYS)
    torch.testing.assert_close(acc, (ref.argmax(-1) == b.query_y).double().mean(1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_chunks_give_the_per_task_results(kind, mode):
    b = image_batch(b=4, side=SIDE, seed=1)
    whole, chunked = make(kind), make(kind, chunk_size=3)
    outs = []
    for lrn in (whole, chunked):
        warm_running_stats(lrn)
        lrn.train(mode == "train")
        outs.append(lrn.query_logits(b, WAYS))
    per_task = make(kind)
    warm_running_stats(per_task)
    per_task.train(mode == "train")
    single = torch.cat([per_task.query_logits(b._replace(
        **{f: getattr(b, f)[i:i + 1] for f in b._fields}), WAYS) for i in range(4)])
    torch.testing.assert_close(outs[0], single, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(outs[1], single, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mode_uses_the_running_statistics(kind):
    learner = make(kind)
    warm_running_stats(learner)
    bn = learner.backbone[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    b = image_batch(b=2, side=SIDE)
    learner.query_logits(b, WAYS)
    # the embeddings of a chunk are those of each image alone through the eval backbone
    items = torch.cat([b.support_x, b.query_x], 1).flatten(0, 1)
    with torch.no_grad():
        alone = torch.cat([learner.backbone(x[None]) for x in items])
        torch.testing.assert_close(learner.embed(items, tasks=2), alone,
                                   rtol=1e-12, atol=1e-12)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]


def test_a_query_does_not_change_another_querys_logits_in_eval_mode():
    # inductive learners in eval mode: each query classified alone (TIM is transductive)
    for kind in ("simpleshot", "baseline_pp", "meta_baseline"):
        learner = make(kind)
        warm_running_stats(learner)
        b = image_batch(b=1, side=SIDE)
        qx = b.query_x.clone()
        qx[:, 1:] = torch.rand_like(qx[:, 1:])
        a = learner.query_logits(b, WAYS)[:, 0]
        c = learner.query_logits(b._replace(query_x=qx), WAYS)[:, 0]
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_attack_gradients_reach_the_images(kind):
    learner = make(kind)
    warm_running_stats(learner)
    b = image_batch(b=2, side=SIDE)
    for field in ("query_x", "support_x"):
        x = getattr(b, field).clone().requires_grad_(True)
        logits = learner.attack_logits(b._replace(**{field: x}), WAYS)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.query_y.flatten())
        (g,) = torch.autograd.grad(loss, x)
        assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0, field
    assert all(p.grad is None for p in learner.parameters())
    adv = fgsm(learner, b, WAYS, eps=0.3)
    assert float((adv.query_x - b.query_x).abs().max()) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_meta_backward_runs_with_finite_losses(kind):
    learner = make(kind)
    learner.train()
    out = learner.meta_backward(image_batch(b=2, side=SIDE), WAYS)
    assert out["loss"] > 0 and 0 <= out["accuracy"] <= 1
    grads = [p.grad for p in learner.backbone.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind):
    learner = make(kind)
    warm_running_stats(learner)
    if isinstance(learner, SimpleShot):
        learner.observe_base_features(torch.randn(8, 6, dtype=torch.float64))
    if isinstance(learner, MetaBaseline):
        with torch.no_grad():
            learner.temperature.fill_(4.0)
    fresh = make(kind, seed=1)
    fresh.load_state_dict(learner.state_dict())
    fresh.eval()
    b = image_batch(b=2, side=SIDE)
    torch.testing.assert_close(fresh.query_logits(b, WAYS), learner.query_logits(b, WAYS),
                               rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_uint8_images(kind):
    learner = make(kind).float().eval()
    b = image_batch(b=2, side=SIDE)
    u8 = b._replace(support_x=(b.support_x * 255).round().to(torch.uint8),
                    query_x=(b.query_x * 255).round().to(torch.uint8))
    out = learner.query_logits(u8, WAYS)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
