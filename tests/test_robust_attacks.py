"""Adversarial attacks (metarobust.robust.attacks) and Learner.attack_logits.

References: finite differences for the gradients of attack_logits through MAML's
adaptation, torchattacks' FGSM / PGD / PGDL2 on a ProtoNet wrapped as a query classifier,
and the constraints (eps-ball, [0, 1] box) checked exactly in float64 on
hypothesis-generated settings. A Conv-4 ProtoNet briefly trained on the glyphs gives the
attack something to break."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from _nets import TanhNet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import metarobust as mr
from metarobust.episodes import Episode
from metarobust.learners import MAML, ProtoNet, Task
from metarobust.models import build_model
from metarobust.robust import adversarial_queries, fgsm, pgd

WAYS, SIDE = 5, 16


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def trained() -> ProtoNet:
    """A small Conv-4 ProtoNet trained for 120 episodes on the glyphs (about 85% 5-way
    1-shot accuracy on unseen classes), in eval mode."""
    torch.manual_seed(0)
    ds = mr.data.glyphs(num_classes=30, per_class=10, image_size=SIDE, seed=0)
    sampler = mr.EpisodeSampler(ds, ways=WAYS, shots=1, queries=5, seed=0)
    learner = ProtoNet(build_model("conv4_snell", 1, SIDE, filters=8))
    opt = torch.optim.Adam(learner.parameters(), 3e-3)
    learner.train()
    for i in range(120):
        opt.zero_grad()
        learner.meta_backward(sampler.sample_batch(2 * i, 2), WAYS)
        opt.step()
    return learner.eval()


def glyph_batch(count: int = 8, dtype: str = "float32", seed: int = 1) -> Episode:
    ds = mr.data.glyphs(num_classes=20, per_class=10, image_size=SIDE, seed=0, split="test")
    sampler = mr.EpisodeSampler(ds, ways=WAYS, shots=1, queries=5, seed=seed, dtype=dtype)
    return sampler.sample_batch(0, count)


def query_loss(learner: nn.Module, batch) -> float:
    logits = learner.query_logits(batch, WAYS)
    return float(F.cross_entropy(logits.reshape(-1, WAYS), batch.query_y.reshape(-1)))


def accuracy(learner: nn.Module, batch) -> float:
    return float(learner.evaluate_batch(batch, WAYS).mean())


def check_constraints(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    """The eps-ball (float64, no tolerance) and the [0, 1] box."""
    assert adv.dtype == torch.float32 and adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    d = adv.double() - x.double()
    if norm == "linf":
        assert float(d.abs().max()) <= eps
    else:
        assert float(torch.linalg.vector_norm(d.flatten(2), dim=2).max()) <= eps


# ---------------------------------------------------------------- effectiveness

def test_attacks_raise_the_loss_and_lower_accuracy(trained: ProtoNet) -> None:
    batch = glyph_batch()
    clean_loss, clean_acc = query_loss(trained, batch), accuracy(trained, batch)
    assert clean_acc > 0.6
    eps = 0.05
    adv_f = fgsm(trained, batch, WAYS, eps)
    adv_p = pgd(trained, batch, WAYS, eps=eps, steps=10, step_size=eps / 4,
                random_start=False)
    poison = pgd(trained, batch, WAYS, eps=0.1, steps=10, step_size=0.025, target="support")
    for adv in (adv_f, adv_p, poison):
        assert query_loss(trained, adv) > clean_loss + 0.5
        assert accuracy(trained, adv) < clean_acc - 0.2
    # PGD is at least as strong as FGSM at the same eps
    assert query_loss(trained, adv_p) >= query_loss(trained, adv_f)
    assert accuracy(trained, adv_p) <= accuracy(trained, adv_f)
    # L2 attacks too (a budget comparable with the L-inf one: 0.05 * sqrt(256) = 0.8)
    adv_l2 = pgd(trained, batch, WAYS, eps=0.8, steps=10, step_size=0.2, norm="l2")
    assert query_loss(trained, adv_l2) > clean_loss + 0.5
    # the other set is untouched
    assert torch.equal(adv_p.support_x, batch.support_x)
    assert torch.equal(poison.query_x, batch.query_x)
    assert torch.equal(adv_p.query_y, batch.query_y) and torch.equal(adv_p.classes,
                                                                    batch.classes)


# ---------------------------------------------------------------- constraints

@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 3.0), step_size=st.floats(0.0, 2.0), steps=st.integers(0, 3),
       norm=st.sampled_from(["linf", "l2"]), target=st.sampled_from(["query", "support"]),
       random_start=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_pgd_respects_ball_and_box(trained: ProtoNet, eps: float, step_size: float,
                                   steps: int, norm: str, target: str, random_start: bool,
                                   seed: int) -> None:
    batch = glyph_batch(count=1)
    adv = pgd(trained, batch, WAYS, eps=eps, steps=steps, step_size=step_size, norm=norm,
              random_start=random_start, target=target, seed=seed)
    assert isinstance(adv, Episode)
    field, other = ("query_x", "support_x") if target == "query" else ("support_x", "query_x")
    check_constraints(getattr(adv, field), getattr(batch, field), eps, norm)
    assert torch.equal(getattr(adv, other), getattr(batch, other))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 3.0), norm=st.sampled_from(["linf", "l2"]),
       target=st.sampled_from(["query", "support"]))
def test_fgsm_respects_ball_and_box(trained: ProtoNet, eps: float, norm: str,
                                    target: str) -> None:
    batch = glyph_batch(count=1)
    adv = fgsm(trained, batch, WAYS, eps, norm=norm, target=target)
    field = "query_x" if target == "query" else "support_x"
    check_constraints(getattr(adv, field), getattr(batch, field), eps, norm)


def test_constraints_are_active() -> None:
    """On mid-grey images (nothing clamped by the box) the L-inf attack reaches the sphere
    and the L2 one lies on it."""
    torch.manual_seed(0)
    learner = ProtoNet(build_model("conv4_snell", 1, SIDE, filters=4)).eval()
    batch = glyph_batch(count=2)
    g = torch.Generator().manual_seed(0)
    grey = lambda x: 0.3 + 0.4 * torch.rand(x.shape, generator=g)  # noqa: E731
    batch = Task(grey(batch.support_x), batch.support_y, grey(batch.query_x), batch.query_y)
    eps = 0.1
    adv = pgd(learner, batch, WAYS, eps=eps, steps=3, step_size=0.05)
    assert isinstance(adv, Task)
    d = (adv.query_x.double() - batch.query_x.double()).abs()
    assert float(d.max()) <= eps and float(d.max()) > eps - 1e-6
    adv = pgd(learner, batch, WAYS, eps=1.0, steps=5, step_size=0.5, norm="l2")
    n = torch.linalg.vector_norm((adv.query_x.double() - batch.query_x.double()).flatten(2),
                                 dim=2)
    assert float(n.max()) <= 1.0 and float(n.min()) > 1.0 - 1e-5


def test_eps_zero_returns_clean_and_uint8_is_scaled(trained: ProtoNet) -> None:
    batch = glyph_batch(count=2)
    for adv in (pgd(trained, batch, WAYS, eps=0.0), fgsm(trained, batch, WAYS, 0.0),
                pgd(trained, batch, WAYS, eps=0.0, target="support")):
        assert torch.equal(adv.query_x, batch.query_x)
        assert torch.equal(adv.support_x, batch.support_x)
    raw = glyph_batch(count=2, dtype="uint8")
    assert raw.query_x.dtype == torch.uint8
    clean = pgd(trained, raw, WAYS, eps=0.0)
    assert clean.query_x.dtype == clean.support_x.dtype == torch.float32
    assert torch.equal(clean.query_x, raw.query_x.float() / 255)
    assert torch.equal(clean.support_x, raw.support_x.float() / 255)
    adv = pgd(trained, raw, WAYS, eps=0.05, steps=2, step_size=0.02)
    assert torch.equal(adv.support_x, raw.support_x.float() / 255)
    check_constraints(adv.query_x, raw.query_x.float() / 255, 0.05, "linf")
    # steps=0 without a random start returns the clean images too
    assert torch.equal(pgd(trained, batch, WAYS, steps=0, random_start=False).query_x,
                       batch.query_x)


def test_pgd_is_deterministic_given_the_seed(trained: ProtoNet) -> None:
    batch = glyph_batch(count=2)
    for norm, eps, step in (("linf", 0.05, 0.01), ("l2", 0.5, 0.1)):
        a = pgd(trained, batch, WAYS, eps=eps, steps=3, step_size=step, norm=norm, seed=7)
        b = pgd(trained, batch, WAYS, eps=eps, steps=3, step_size=step, norm=norm, seed=7)
        c = pgd(trained, batch, WAYS, eps=eps, steps=0, norm=norm, seed=8)
        d = pgd(trained, batch, WAYS, eps=eps, steps=0, norm=norm, seed=7)
        assert torch.equal(a.query_x, b.query_x)
        assert not torch.equal(c.query_x, d.query_x)
        assert not torch.equal(d.query_x, batch.query_x)


# ---------------------------------------------------------------- attack_logits

D, H, MW = 4, 5, 3


def vector_batch(b: int = 2, shots: int = 2, queries: int = 3, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(MW).repeat_interleave(shots).expand(b, -1).contiguous()
    qy = torch.arange(MW).repeat_interleave(queries).expand(b, -1).contiguous()
    sx = torch.randn(b, MW * shots, D, generator=g, dtype=torch.float64) + sy[..., None]
    qx = torch.randn(b, MW * queries, D, generator=g, dtype=torch.float64) + qy[..., None]
    return Task(sx, sy, qx, qy)


def tiny_maml(variant: str = "maml", order: str = "second", path: str = "loop",
              **kw) -> MAML:
    torch.manual_seed(0)
    kw.setdefault("inner_steps", 2)
    return MAML(TanhNet(D, H), inner_lr=0.5, order=order, variant=variant, ways=MW, path=path,
                **kw).double()


def attack_grads(learner: nn.Module, batch: Task, weights: torch.Tensor, ways: int):
    sx = batch.support_x.clone().requires_grad_(True)
    qx = batch.query_x.clone().requires_grad_(True)
    out = learner.attack_logits(batch._replace(support_x=sx, query_x=qx), ways)
    return torch.autograd.grad((out * weights).sum(), (sx, qx))


def check_directional_derivatives(learner: nn.Module, batch: Task, weights: torch.Tensor,
                                  ways: int, grads, directions: int = 3,
                                  h: float = 1e-6) -> None:
    """<grad, v> against central differences along random directions v of each input."""
    def f(b: Task) -> float:
        return float((learner.attack_logits(b, ways).detach() * weights).sum())

    g = torch.Generator().manual_seed(2)
    for name, grad in zip(("support_x", "query_x"), grads):
        x = getattr(batch, name)
        for _ in range(directions):
            v = torch.randn(x.shape, generator=g, dtype=x.dtype)
            fd = (f(batch._replace(**{name: x + h * v}))
                  - f(batch._replace(**{name: x - h * v}))) / (2 * h)
            assert abs(float((grad * v).sum()) - fd) <= 1e-6 * max(1.0, abs(fd)), name


@pytest.mark.parametrize("path", ["loop", "vmap"])
@pytest.mark.parametrize("order", ["second", "first"])
@pytest.mark.parametrize("variant", ["maml", "metasgd", "anil"])
def test_maml_attack_gradients_match_finite_differences(variant: str, order: str,
                                                        path: str) -> None:
    learner = tiny_maml(variant, order, path, test_inner_steps=3).eval()
    batch = vector_batch()
    weights = torch.randn(2, 3 * MW, MW, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    gs, gq = attack_grads(learner, batch, weights, MW)
    check_directional_derivatives(learner, batch, weights, MW, (gs, gq))
    assert float(gs.abs().max()) > 1e-3  # the support matters through the adaptation
    # the attack differentiates through the adaptation whatever the learner's order
    if order == "first":
        second = tiny_maml(variant, "second", path, test_inner_steps=3).eval()
        gs2, gq2 = attack_grads(second, batch, weights, MW)
        torch.testing.assert_close(gs, gs2, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gq, gq2, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in learner.parameters())


@pytest.mark.parametrize("prototype", ["mean", "trimmed_mean"])
def test_protonet_attack_gradients_match_finite_differences(prototype: str) -> None:
    torch.manual_seed(0)
    learner = ProtoNet(TanhNet(D, H), prototype=prototype, trim=0.25).double().eval()
    batch = vector_batch(shots=4)
    weights = torch.randn(2, 3 * MW, MW, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    gs, gq = attack_grads(learner, batch, weights, MW)
    check_directional_derivatives(learner, batch, weights, MW, (gs, gq))
    assert float(gs.abs().max()) > 1e-3 and float(gq.abs().max()) > 1e-3
    assert all(p.grad is None for p in learner.parameters())


def test_maml_attack_logits_use_test_inner_steps() -> None:
    batch = vector_batch()
    learner = tiny_maml(inner_steps=1, test_inner_steps=3).eval()
    torch.testing.assert_close(learner.attack_logits(batch, MW).detach(),
                               learner.query_logits(batch, MW), rtol=1e-12, atol=1e-12)
    one = learner.attack_logits(batch, MW, inner_steps=1).detach()
    assert not torch.allclose(one, learner.query_logits(batch, MW))
    with pytest.raises(ValueError, match="inner_steps"):
        learner.attack_logits(batch, MW, inner_steps=-1)
    with pytest.raises(TypeError, match="inner_steps"):
        learner.attack_logits(batch, MW, inner_steps=1.5)


def test_conv_maml_attack_gradients_loop_equals_vmap() -> None:
    """BatchNorm in the backbone (batch statistics per task) on both execution paths."""
    grads = []
    for path in ("loop", "vmap"):
        torch.manual_seed(0)
        net = build_model("conv4_finn", 1, 8, filters=3)
        learner = MAML(net, inner_lr=0.3, inner_steps=1, test_inner_steps=2, order="first",
                       ways=MW, path=path).double().eval()
        g = torch.Generator().manual_seed(0)
        sy = torch.arange(MW).repeat(2).expand(2, -1).contiguous()
        batch = Task(torch.rand(2, 2 * MW, 1, 8, 8, generator=g, dtype=torch.float64), sy,
                     torch.rand(2, 2 * MW, 1, 8, 8, generator=g, dtype=torch.float64), sy)
        grads.append(attack_grads(learner, batch, torch.ones(2, 2 * MW, MW,
                                                             dtype=torch.float64), MW))
        assert all(p.grad is None for p in learner.parameters())
    for a, b in zip(*grads):
        assert float(a.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_protonet_attack_logits_constants_and_batch_norm(trained: ProtoNet,
                                                         mode: str) -> None:
    learner = copy.deepcopy(trained).train(mode == "train")
    batch = glyph_batch(count=2)
    stats = {k: v.clone() for k, v in learner.state_dict().items()}
    qx = batch.query_x.clone().requires_grad_(True)
    sx = batch.support_x.clone().requires_grad_(True)
    out = learner.attack_logits(Episode(sx, batch.support_y, qx, batch.query_y,
                                        batch.classes), WAYS)
    assert out.shape == (2, 5 * WAYS, WAYS)
    F.cross_entropy(out.reshape(-1, WAYS), batch.query_y.reshape(-1)).backward()
    assert qx.grad is not None and float(qx.grad.abs().max()) > 0
    assert sx.grad is not None and float(sx.grad.abs().max()) > 0
    assert all(p.grad is None and p.requires_grad for p in learner.parameters())
    for k, v in learner.state_dict().items():  # running statistics included
        assert torch.equal(v, stats[k]), k
    assert learner.training == (mode == "train")
    # the current mode is respected: the same outputs as the ordinary forward
    reference = copy.deepcopy(learner)
    torch.testing.assert_close(out.detach(), reference.query_logits(batch, WAYS))


# ---------------------------------------------------------------- adversarial querying

def test_adversarial_queries_training_mode(trained: ProtoNet) -> None:
    learner = copy.deepcopy(trained).train()
    batch = glyph_batch(count=2)
    stats = {k: v.clone() for k, v in learner.state_dict().items()}
    adv = adversarial_queries(learner, batch, WAYS, eps=0.05, steps=3, step_size=0.02,
                              seed=3)
    assert learner.training
    for k, v in learner.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert all(p.grad is None for p in learner.parameters())
    assert torch.equal(adv.support_x, batch.support_x)
    check_constraints(adv.query_x, batch.query_x, 0.05, "linf")
    again = adversarial_queries(learner, batch, WAYS, eps=0.05, steps=3, step_size=0.02,
                                seed=3)
    assert torch.equal(adv.query_x, again.query_x)
    clean = copy.deepcopy(learner).meta_backward(batch, WAYS)
    attacked = learner.meta_backward(adv, WAYS)
    assert attacked["loss"] > clean["loss"]
    assert all(p.grad is not None for p in learner.parameters())


def test_adversarial_queries_use_maml_training_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = tiny_maml(inner_steps=1, test_inner_steps=4)
    batch = vector_batch()
    g = torch.Generator().manual_seed(0)
    batch = batch._replace(support_x=torch.rand(batch.support_x.shape, generator=g,
                                                dtype=torch.float64),
                           query_x=torch.rand(batch.query_x.shape, generator=g,
                                              dtype=torch.float64))
    seen: list = []
    original = MAML.attack_logits

    def spy(self, b, ways, *, inner_steps=None):
        seen.append(inner_steps)
        return original(self, b, ways, inner_steps=inner_steps)

    monkeypatch.setattr(MAML, "attack_logits", spy)
    adv = adversarial_queries(learner.train(), batch, MW, eps=0.1, steps=2, step_size=0.05)
    assert seen == [1, 1]
    assert adv.query_x.dtype == torch.float64  # float images keep their dtype
    seen.clear()
    pgd(learner.eval(), batch, MW, eps=0.1, steps=2, step_size=0.05)
    assert seen == [None, None]  # evaluation: test_inner_steps
    # support poisoning moves a first-order MAML's support set too
    fo = tiny_maml(order="first", inner_steps=1)
    adv = pgd(fo.eval(), batch, MW, eps=0.1, steps=2, step_size=0.05, target="support",
              random_start=False)
    assert not torch.equal(adv.support_x, batch.support_x)
    assert torch.equal(adv.query_x, batch.query_x)


# ---------------------------------------------------------------- torchattacks reference

class QueryClassifier(nn.Module):
    """A ProtoNet as a classifier of query images, the support set fixed (one task)."""

    def __init__(self, learner: ProtoNet, episode: Episode, ways: int) -> None:
        super().__init__()
        self.learner, self.episode, self.ways = learner, episode, ways

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.episode
        task = Task(e.support_x[None], e.support_y[None], x[None], e.query_y[None])
        return self.learner.attack_logits(task, self.ways)[0]


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgdl2"])
def test_matches_torchattacks(trained: ProtoNet, attack: str) -> None:
    if os.environ.get("CI"):  # CI installs it (.ci/run): missing there is a failure
        import torchattacks
    else:
        torchattacks = pytest.importorskip("torchattacks")
    batch = glyph_batch(count=3)
    for j in range(3):
        episode = batch[j]
        single = Task(episode.support_x[None], episode.support_y[None],
                      episode.query_x[None], episode.query_y[None])
        model = QueryClassifier(trained, episode, WAYS).eval()
        if attack == "fgsm":
            ref = torchattacks.FGSM(model, eps=0.05)
            ours = fgsm(trained, single, WAYS, 0.05)
        elif attack == "pgd":
            ref = torchattacks.PGD(model, eps=0.05, alpha=0.01, steps=10, random_start=False)
            ours = pgd(trained, single, WAYS, eps=0.05, steps=10, step_size=0.01,
                       random_start=False)
        else:
            ref = torchattacks.PGDL2(model, eps=0.8, alpha=0.2, steps=10, random_start=False)
            ours = pgd(trained, single, WAYS, eps=0.8, steps=10, step_size=0.2, norm="l2",
                       random_start=False)
        expected = ref(episode.query_x, episode.query_y)
        assert trained.training is False
        # The same iterates bit for bit; the results differ by at most one float32 ulp,
        # where ours rounds a pixel towards the clean image because float32 arithmetic
        # overstepped the ball (eps itself is not a float32 number).
        assert float((ours.query_x[0] - expected).abs().max()) <= 1.2e-7
        check_constraints(ours.query_x, single.query_x, 0.05 if attack != "pgdl2" else 0.8,
                          "l2" if attack == "pgdl2" else "linf")


# ---------------------------------------------------------------- bad arguments

def test_bad_arguments(trained: ProtoNet) -> None:
    batch = glyph_batch(count=1)
    cases = [
        (ValueError, "eps", lambda: pgd(trained, batch, WAYS, eps=-0.1)),
        (ValueError, "eps", lambda: fgsm(trained, batch, WAYS, float("nan"))),
        (ValueError, "eps", lambda: fgsm(trained, batch, WAYS, float("inf"))),
        (TypeError, "eps", lambda: fgsm(trained, batch, WAYS, "0.1")),
        (ValueError, "steps", lambda: pgd(trained, batch, WAYS, steps=-1)),
        (TypeError, "steps", lambda: pgd(trained, batch, WAYS, steps=2.0)),
        (ValueError, "step_size", lambda: pgd(trained, batch, WAYS, step_size=-1e-3)),
        (ValueError, "norm", lambda: pgd(trained, batch, WAYS, norm="l1")),
        (ValueError, "norm", lambda: fgsm(trained, batch, WAYS, 0.1, norm="L2")),
        (ValueError, "target", lambda: pgd(trained, batch, WAYS, target="labels")),
        (ValueError, "target", lambda: fgsm(trained, batch, WAYS, 0.1, target=None)),
        (ValueError, "seed", lambda: pgd(trained, batch, WAYS, seed=-1)),
        (TypeError, "random_start", lambda: pgd(trained, batch, WAYS, random_start=1)),
        (ValueError, "ways", lambda: pgd(trained, batch, 0)),
        (ValueError, "labels must be in", lambda: pgd(trained, batch, 3)),
        (TypeError, "learner", lambda: pgd(nn.Linear(2, 2), batch, WAYS)),
        (TypeError, "batch", lambda: pgd(trained, {"query_x": batch.query_x}, WAYS)),
        (ValueError, "query_x", lambda: pgd(trained, Task(batch.support_x, batch.support_y,
                                                          batch.query_x * 2,
                                                          batch.query_y), WAYS)),
        (TypeError, "support_x", lambda: fgsm(trained, Task(batch.support_x.long(),
                                                            batch.support_y, batch.query_x,
                                                            batch.query_y), WAYS, 0.1)),
        (ValueError, "eps", lambda: adversarial_queries(trained, batch, WAYS, eps=-1)),
        (ValueError, "norm", lambda: adversarial_queries(trained, batch, WAYS, norm="l3")),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
    sinusoid = MAML(TanhNet(D, H), task="regression", outputs=1)
    with pytest.raises(ValueError, match="learner"):
        fgsm(sinusoid, batch, WAYS, 0.1)


# ---------------------------------------------------------------- CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(trained: ProtoNet) -> None:
    learner = copy.deepcopy(trained).cuda()
    batch = glyph_batch(count=4).to("cuda")
    adv = pgd(learner, batch, WAYS, eps=0.05, steps=5, step_size=0.02, seed=5)
    again = pgd(learner, batch, WAYS, eps=0.05, steps=5, step_size=0.02, seed=5)
    assert adv.query_x.device.type == "cuda"
    check_constraints(adv.query_x, batch.query_x, 0.05, "linf")
    assert torch.equal(adv.query_x, again.query_x)
    l2 = pgd(learner, batch, WAYS, eps=0.8, steps=5, step_size=0.2, norm="l2",
             target="support", seed=5)
    check_constraints(l2.support_x, batch.support_x, 0.8, "l2")
    assert accuracy(learner, adv) < accuracy(learner, batch)
    torch.manual_seed(0)
    maml = MAML(build_model("conv4_finn", 1, SIDE, filters=8), inner_steps=1, ways=WAYS,
                order="first").cuda().eval()  # the vmap path
    adv = pgd(maml, batch, WAYS, eps=0.05, steps=2, step_size=0.02, target="support")
    check_constraints(adv.support_x, batch.support_x, 0.05, "linf")
    assert not torch.equal(adv.support_x, batch.support_x)


@pytest.mark.parametrize("kwargs, name", [(dict(eps=1e300), "eps"), (dict(step_size=1e300),
                                                                     "step_size"),
                                          (dict(eps=1e38, norm="l2"), "eps")])
def test_radii_and_steps_that_overflow_are_named(kwargs, name) -> None:
    # eps 1e300: a RuntimeError converting it to float32; step_size 1e300 and FGSM's eps
    # 1e300 gave NaN images
    learner = ProtoNet(build_model("conv4_snell", 1, 28, filters=4)).eval()
    batch = glyph_batch(count=2)
    with pytest.raises(ValueError, match=f"^{name}: must be <= .* for torch.float32 images"):
        pgd(learner, batch, 5, steps=1, **({"eps": 0.1} | kwargs))
    if name == "eps":
        with pytest.raises(ValueError, match="^eps: must be <= "):
            fgsm(learner, batch, 5, kwargs["eps"], norm=kwargs.get("norm", "linf"))


def test_uint8_batches_take_the_learners_dtype() -> None:
    learner = ProtoNet(build_model("conv4_snell", 1, 28, filters=4)).double().eval()
    batch = glyph_batch(count=2, dtype="uint8")
    adv = fgsm(learner, batch, 5, 0.1)  # a float32 conversion failed inside torch
    assert adv.query_x.dtype == torch.float64 and adv.support_x.dtype == torch.float64
    with pytest.raises(TypeError, match="^batch.support_y: expected a torch.Tensor"):
        fgsm(learner, Episode(batch.support_x, None, batch.query_x, batch.query_y,
                              batch.classes), 5, 0.1)
