"""Robust meta-training objectives (metarobust.robust.meta_objectives): TRADES and ADML.

References: TRADES' loss written out with torch.nn.functional on the learner's call, ADML's
as two meta_backward calls on batches attacked by the public attacks, the plain clean
meta-gradient for beta = 0, a forward hook on MAML's network for what the inner loop sees,
and short Trainer runs on the glyphs."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, grads, image_batch, tiny_conv_maml
from _runs import tiny

from metarobust import seeds
from metarobust.checkpoint import load_checkpoint
from metarobust.config import TrainConfig
from metarobust.learners import ProtoNet, Reptile
from metarobust.models import build_model
from metarobust.robust import adversarial_queries, pgd
from metarobust.robust.meta_objectives import (
    _inner_trades_loss,
    adml_backward,
    check_objective,
    meta_objective,
    trades_backward,
    trades_kl,
    trades_queries,
)
from metarobust.train import Trainer

EPS, STEPS, STEP = 0.1, 3, 0.04


def protonet() -> ProtoNet:
    torch.manual_seed(0)
    return ProtoNet(build_model("conv4_snell", 1, 16, filters=4)).double().train()


def maml() -> torch.nn.Module:
    return tiny_conv_maml("maml", "second", "loop").train()


def batch_for(learner: torch.nn.Module, queries: int = 2, b: int = 2):
    side = 16 if isinstance(learner, ProtoNet) else 8
    return image_batch(b=b, shots=1, queries=queries, side=side, seed=1)


def hand_trades(learner, batch, adv_qx, beta: float) -> torch.Tensor:
    """CE(clean) + beta * KL(p_clean || p_adv), each averaged over a task's queries, then
    over the tasks, on the learner's call."""
    clean = learner(batch.support_x, batch.support_y, batch.query_x)
    adv = learner(batch.support_x, batch.support_y, adv_qx)
    total = 0.0
    for t in range(clean.shape[0]):
        ce = F.cross_entropy(clean[t], batch.query_y[t])
        kl = F.kl_div(F.log_softmax(adv[t], -1), F.softmax(clean[t], -1),
                      reduction="batchmean")
        total = total + ce + beta * kl
    return total / clean.shape[0]


# ---------------------------------------------------------------- TRADES

@pytest.mark.parametrize("make", [protonet, maml], ids=["protonet", "maml"])
def test_trades_loss_and_gradient_equal_the_written_out_loss(make) -> None:
    learner = make()
    ref = copy.deepcopy(learner)
    batch = batch_for(learner)
    beta = 2.5
    adv = trades_queries(copy.deepcopy(learner), batch, WAYS, EPS, STEPS, STEP, seed=7)
    stats = trades_backward(learner, batch, WAYS, EPS, STEPS, STEP, beta=beta, seed=7)
    loss = hand_trades(ref, batch, adv.query_x, beta)
    loss.backward()
    assert stats["loss"] == pytest.approx(float(loss.detach()), rel=1e-10)
    acc = (ref(batch.support_x, batch.support_y, batch.query_x).argmax(-1)
           == batch.query_y).double().mean()
    assert stats["accuracy"] == pytest.approx(float(acc))
    got, want = grads(learner), grads(ref)
    assert got.keys() == want.keys() and got
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("make", [protonet, maml], ids=["protonet", "maml"])
def test_beta_zero_is_exactly_the_clean_meta_gradient(make) -> None:
    learner = make()
    ref = copy.deepcopy(learner)
    batch = batch_for(learner)
    stats = trades_backward(learner, batch, WAYS, EPS, STEPS, STEP, beta=0.0, seed=3)
    clean = ref.meta_backward(batch, WAYS)
    assert stats == clean
    got, want = grads(learner), grads(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_trades_pgd_increases_the_kl_and_stays_in_the_ball() -> None:
    learner = protonet()
    batch = batch_for(learner, queries=3)
    clean = learner.attack_logits(batch, WAYS)
    start = trades_queries(learner, batch, WAYS, EPS, 0, STEP, seed=4)  # the random start
    adv = trades_queries(learner, batch, WAYS, EPS, 10, STEP, seed=4)
    kl0 = float(trades_kl(clean, learner.attack_logits(start, WAYS)).mean())
    kl = float(trades_kl(clean, learner.attack_logits(adv, WAYS)).mean())
    assert kl > 2 * kl0 and kl > 0
    d = adv.query_x.double() - batch.query_x.double()
    assert float(d.abs().max()) <= EPS and 0 <= float(adv.query_x.min())
    assert float(adv.query_x.max()) <= 1 and torch.equal(adv.support_x, batch.support_x)


def test_trades_kl_matches_torch_and_ignores_classes_missing_from_both() -> None:
    g = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    want = torch.stack([F.kl_div(F.log_softmax(adv[t], -1), F.softmax(clean[t], -1),
                                 reduction="batchmean") for t in range(2)])
    torch.testing.assert_close(trades_kl(clean, adv), want)
    inf = torch.full((2, 4, 1), -math.inf)
    torch.testing.assert_close(trades_kl(torch.cat([clean, inf], -1),
                                         torch.cat([adv, inf], -1)), want)


def _support_inputs(learner, batch, inner: bool) -> list[torch.Tensor]:
    """Every input of MAML's backbone during a TRADES step, support-sized or doubled."""
    seen: list[torch.Tensor] = []
    n = batch.support_x.shape[1]
    hook = learner.net.body.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().clone())
        if args[0].shape[0] in (n, 2 * n) else None)
    try:
        trades_backward(learner, batch, WAYS, EPS, 1, STEP, beta=1.0, inner=inner, seed=2)
    finally:
        hook.remove()
    return seen


def test_outer_only_trades_adapts_on_the_clean_support() -> None:
    learner = maml()
    # 3 support items, 9 queries: sizes tell them apart
    batch = batch_for(learner, queries=3, b=1)
    seen = _support_inputs(learner, batch, inner=False)
    assert seen and all(x.shape[0] == 3 for x in seen)
    for x in seen:
        assert any(torch.equal(x, s) for s in batch.support_x)


def test_inner_trades_adapts_on_clean_and_adversarial_support() -> None:
    learner = maml()
    batch = batch_for(learner, queries=3, b=1)
    seen = _support_inputs(learner, batch, inner=True)
    doubled = [x for x in seen if x.shape[0] == 6]
    assert doubled
    for x in doubled:
        t = next(t for t, s in enumerate(batch.support_x) if torch.equal(x[:3], s))
        d = x[3:] - batch.support_x[t]
        assert 0 < float(d.abs().max()) <= EPS


def test_inner_loss_is_ce_plus_beta_kl_on_the_two_halves_and_restored() -> None:
    learner = maml()
    g = torch.Generator().manual_seed(5)
    out = torch.randn(6, WAYS, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    with _inner_trades_loss(learner, 3.0):
        got = learner._loss(out, y)
    want = (F.cross_entropy(out[:3], y[:3])
            + 3.0 * F.kl_div(F.log_softmax(out[3:], -1), F.softmax(out[:3], -1),
                             reduction="batchmean"))
    torch.testing.assert_close(got, want)
    assert "_loss" not in vars(learner)  # the class's method again
    torch.testing.assert_close(learner._loss(out, y), F.cross_entropy(out, y))


# ---------------------------------------------------------------- ADML

def test_adml_loss_is_the_sum_of_two_meta_backwards_by_hand() -> None:
    learner = protonet()
    ref, attacker = copy.deepcopy(learner), copy.deepcopy(learner)
    batch = batch_for(learner)
    stats = adml_backward(learner, batch, WAYS, EPS, STEPS, STEP, seed=9)
    adv_q = adversarial_queries(attacker, batch, WAYS, EPS, STEPS, STEP, seed=9)
    adv_s = pgd(attacker, batch, WAYS, EPS, STEPS, STEP, target="support",
                seed=seeds.derive(9, seeds.ADVERSARIAL_TRAINING, 1))
    assert not torch.equal(adv_q.query_x, batch.query_x)
    assert not torch.equal(adv_s.support_x, batch.support_x)
    first, second = ref.meta_backward(adv_q, WAYS), ref.meta_backward(adv_s, WAYS)
    assert stats["loss"] == pytest.approx(first["loss"] + second["loss"], rel=1e-12)
    assert stats["accuracy"] == pytest.approx((first["accuracy"] + second["accuracy"]) / 2)
    got, want = grads(learner), grads(ref)
    assert got.keys() == want.keys() and got
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)


def test_meta_objective_dispatches_with_unsynced_statistics() -> None:
    learner = protonet()
    batch = batch_for(learner)
    ref = copy.deepcopy(learner)
    stats = meta_objective("trades", EPS, STEPS, STEP, "linf", beta=1.0, seed=1)(
        learner, batch, WAYS)
    assert isinstance(stats["loss"], torch.Tensor)
    want = trades_backward(ref, batch, WAYS, EPS, STEPS, STEP, beta=1.0, seed=1)
    assert float(stats["loss"]) == pytest.approx(want["loss"], rel=1e-12)


# ---------------------------------------------------------------- refused input

def test_bad_arguments_are_refused() -> None:
    learner = protonet()
    batch = batch_for(learner)
    with pytest.raises(ValueError, match=r"beta: must be finite and >= 0, got -1"):
        trades_backward(learner, batch, WAYS, beta=-1.0)
    with pytest.raises(ValueError, match=r"beta: must be finite and >= 0, got nan"):
        trades_backward(learner, batch, WAYS, beta=float("nan"))
    with pytest.raises(TypeError, match=r"inner: expected a bool, got 1"):
        trades_backward(learner, batch, WAYS, inner=1)
    with pytest.raises(ValueError, match=r"inner: .* got method 'trades' and ProtoNet"):
        trades_backward(learner, batch, WAYS, inner=True)
    with pytest.raises(ValueError, match=r"method: expected one of aq, trades, adml; got 'mart'"):
        meta_objective("mart", EPS, STEPS, STEP, "linf")
    with pytest.raises(ValueError, match=r"steps: must be >= 0, got -1"):
        trades_queries(learner, batch, WAYS, EPS, -1)
    reptile = Reptile(build_model("conv4_finn", 1, 8, filters=3), ways=WAYS)
    for method in ("trades", "adml"):
        with pytest.raises(ValueError, match=rf"method: '{method}' differentiates a query loss"):
            check_objective(reptile, method)
    check_objective(reptile, "aq")  # adversarial querying suits it
    with pytest.raises(ValueError, match=r"inner: .* needs method 'trades'"):
        check_objective(maml(), "adml", inner=True)
    with pytest.raises(RuntimeError, match="gradients are disabled"), torch.no_grad():
        trades_backward(learner, batch, WAYS)


@pytest.mark.parametrize("kw, words", [
    (dict(adversarial=True, adv_method="mart"), "adv_method: expected one of aq, trades, adml"),
    (dict(adversarial=True, adv_method="trades", trades_beta=-0.5),
     "trades_beta: must be finite and >= 0, got -0.5"),
    (dict(adversarial=True, adv_method="trades", trades_beta=math.inf),
     "trades_beta: must be finite and >= 0, got inf"),
    (dict(adversarial=True, adv_method="trades", trades_beta=math.nan),
     "trades_beta: must be finite and >= 0, got nan"),
    (dict(adv_method="trades"), "adv_method: configures adversarial training, which is off"),
    (dict(adv_inner=True), "adv_inner: configures adversarial training, which is off"),
    (dict(adversarial=True, trades_beta=1.0), "trades_beta: a TRADES option; adv_method is 'aq'"),
    (dict(adversarial=True, adv_method="adml", adv_inner=True),
     "adv_inner: a TRADES option; adv_method is 'adml'"),
    (dict(adversarial=True, adv_method="trades", adv_inner=True),
     "adv_inner: the TRADES term in the inner loop needs an inner loop of the MAML family"),
    (dict(learner="reptile", adversarial=True, adv_method="adml"),
     "adv_method: 'adml' differentiates a query loss; Reptile"),
])
def test_bad_config_options_are_refused(kw, words) -> None:
    with pytest.raises(ValueError) as e:
        TrainConfig(episodes=4, **kw).check()
    assert words in str(e.value)


def test_config_options_round_trip(tmp_path) -> None:
    cfg = TrainConfig(learner="maml", adversarial=True, adv_method="trades", trades_beta=1.5,
                      adv_inner=True, episodes=4).check()
    cfg.save(tmp_path / "c.toml")
    assert TrainConfig.load(tmp_path / "c.toml") == cfg


def test_cli_flags_set_the_objective(tmp_path, capsys) -> None:
    from metarobust import cli

    base = ["train", "--learner", "protonet", "--dataset", "glyphs", "--glyph-classes", "30",
            "--ways", "5", "--shots", "1", "--queries", "3", "--test-queries", "3",
            "--val-every", "100", "--steps", "1", "--device", "cpu"]
    assert cli.main([*base, "--adv-method", "trades", "--out", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err
    assert "adv_method: configures adversarial training, which is off" in err
    assert "[--adv-method trades]" in err
    assert cli.main([*base, "--adversarial", "--adv-steps", "1", "--adv-method", "trades",
                     "--trades-beta", "2", "--out", str(tmp_path / "r1")]) == 0
    saved = TrainConfig.load(tmp_path / "r1" / "config.toml")
    assert (saved.adv_method, saved.trades_beta, saved.adv_inner) == ("trades", 2.0, False)


# ---------------------------------------------------------------- the trainer

@pytest.mark.parametrize("kw", [
    dict(adv_method="aq"), dict(adv_method="trades", trades_beta=2.0), dict(adv_method="adml"),
    dict(learner="maml", adv_method="trades", adv_inner=True, meta_batch=2, model="conv4_finn",
         image_size=16),
    dict(learner="matching", adv_method="adml"),
], ids=["aq", "trades", "adml", "maml-trades-inner", "matching-adml"])
def test_trainer_runs_each_objective(tmp_path, kw) -> None:
    torch.set_num_threads(1)
    cfg = tiny(adversarial=True, adv_steps=1, steps=2, episodes=None, val_every=10**6,
               log_every=1, **kw)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    before = [p.detach().clone() for p in trainer.learner.parameters()]
    result = trainer.fit()
    assert result["steps"] == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.learner.parameters()))
