"""Test-time adaptation (metarobust.robust.tta) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from _learners import WAYS, image_batch, tiny_conv_maml
from torch import nn

import metarobust as mr
from metarobust.evaluate import evaluate
from metarobust.learners import ProtoNet
from metarobust.robust.tta import TTALearner, tent_entropy

SIDE = 8


def _net_learner(seed: int = 0) -> ProtoNet:
    """Flatten -> Linear -> BatchNorm1d, with running statistics and affine parameters far
    from the identity, so each mode's normalisation shows."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 5), nn.BatchNorm1d(5))
    bn = net[2]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return ProtoNet(net).double().eval()


def _hand_logits(learner: ProtoNet, sx, sy, qx, weight=None, bias=None) -> torch.Tensor:
    """One episode's ProtoNet logits with BatchNorm statistics of its own items, by hand."""
    lin, bn = learner.backbone[1], learner.backbone[2]
    weight = bn.weight if weight is None else weight
    bias = bn.bias if bias is None else bias
    h = torch.cat([sx, qx]).flatten(1) @ lin.weight.T + lin.bias
    mean, var = h.mean(0), ((h - h.mean(0)) ** 2).mean(0)
    e = (h - mean) / torch.sqrt(var + bn.eps) * weight + bias
    se, qe = e[: len(sx)], e[len(sx):]
    protos = torch.stack([se[sy == c].mean(0) for c in range(WAYS)])
    return -((qe[:, None] - protos[None]) ** 2).sum(-1)


def test_bn_uses_each_episodes_own_statistics():
    learner = _net_learner()
    batch = image_batch(b=3, side=SIDE)
    out = TTALearner(learner, "bn").query_logits(batch, WAYS)
    for i in range(3):
        ref = _hand_logits(learner, batch.support_x[i], batch.support_y[i], batch.query_x[i])
        torch.testing.assert_close(out[i], ref.detach(), rtol=1e-9, atol=1e-9)
    plain = TTALearner(learner, "none").query_logits(batch, WAYS)
    torch.testing.assert_close(plain, learner.query_logits(batch, WAYS), rtol=0, atol=0)
    assert not torch.allclose(plain, out)  # running statistics differ from the episode's


def test_tent_is_one_adam_step_on_the_query_entropy():
    learner = _net_learner()
    batch = image_batch(b=2, side=SIDE)
    bn = learner.backbone[2]
    out = TTALearner(learner, "tent").query_logits(batch, WAYS)
    lr, eps = 1e-3, 1e-8
    for i in range(2):
        sx, sy, qx = batch.support_x[i], batch.support_y[i], batch.query_x[i]
        w = bn.weight.detach().clone().requires_grad_(True)
        b = bn.bias.detach().clone().requires_grad_(True)
        logits = _hand_logits(learner, sx, sy, qx, w, b)
        p = logits.softmax(-1)
        entropy = -(p * p.log()).sum(-1).mean()
        gw, gb = torch.autograd.grad(entropy, (w, b))
        # Adam's first step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
        w1 = w.detach() - lr * gw / (gw.abs() + eps)
        b1 = b.detach() - lr * gb / (gb.abs() + eps)
        ref = _hand_logits(learner, sx, sy, qx, w1, b1).detach()
        torch.testing.assert_close(out[i], ref, rtol=1e-7, atol=1e-9)
        bn_only = _hand_logits(learner, sx, sy, qx).detach()
        assert not torch.allclose(out[i], bn_only, rtol=0, atol=1e-12)  # the step counts


def test_tent_entropy_matches_a_direct_formula_and_ignores_absent_classes():
    logits = torch.tensor([[1.0, 2.0, -float("inf")], [0.5, 0.5, -float("inf")]],
                          dtype=torch.float64)
    p = logits[:, :2].softmax(-1)
    ref = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(tent_entropy(logits), ref)
    assert math.isclose(float(tent_entropy(torch.zeros(1, 4))), math.log(4), rel_tol=1e-6)


@pytest.mark.parametrize("mode", ["bn", "tent"])
def test_the_model_is_restored_bit_exactly_after_each_episode(mode):
    learner = _net_learner()
    learner.backbone[1].weight.grad = torch.ones_like(learner.backbone[1].weight)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    flags = [p.requires_grad for p in learner.parameters()]
    batch = image_batch(b=3, side=SIDE)
    adapted = TTALearner(learner, mode, steps=3)
    first = adapted.query_logits(batch, WAYS)
    for k, v in learner.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in learner.parameters()] == flags
    assert torch.equal(learner.backbone[1].weight.grad,
                       torch.ones_like(learner.backbone[1].weight))
    assert learner.backbone[2].bias.grad is None
    assert not any(m.training for m in learner.modules())
    assert learner.backbone[2].track_running_stats
    # each episode adapted from the trained model: alone or in a batch, the same outputs
    for i in range(3):
        alone = adapted.query_logits(mr.learners.base.slice_batch(batch, i, i + 1), WAYS)
        torch.testing.assert_close(alone[0], first[i], rtol=1e-12, atol=1e-12)


def test_paired_evaluation_over_the_same_episodes():
    ds = mr.data.glyphs(num_classes=10, per_class=6, image_size=16, seed=0)
    learner = mr.learners.ProtoNet(mr.models.build_model("conv4_finn", 1, 16, filters=3))
    sampler = mr.EpisodeSampler(ds, ways=3, shots=1, queries=2, seed=0)
    plain = evaluate(learner, sampler, 8, batch_size=4, progress=False)
    none = evaluate(TTALearner(learner, "none"), sampler, 8, batch_size=4,
                       progress=False)
    assert none == plain
    bn = evaluate(TTALearner(learner, "bn"), sampler, 8, batch_size=4, progress=False)
    # the same episodes one at a time, with the hand-applied per-episode statistics mode
    accs = []
    for i in range(8):
        batch = sampler.sample_batch(i, 1)
        with torch.no_grad():
            for m in learner.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.train()
                    m.track_running_stats = False
            logits = learner.query_logits(batch, 3)
            for m in learner.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
                    m.track_running_stats = True
        accs.append(float((logits.argmax(-1) == batch.query_y).double().mean()))
    assert math.isclose(bn["accuracy"], sum(accs) / 8, rel_tol=1e-6)  # float32 means
    assert bn["accuracy"] != plain["accuracy"]


def test_maml_bn_is_its_plain_evaluation_and_tent_is_refused():
    maml = tiny_conv_maml("maml", "first", "loop", side=SIDE).eval()
    batch = image_batch(b=2, side=SIDE)
    torch.testing.assert_close(TTALearner(maml, "bn").query_logits(batch, WAYS),
                               maml.query_logits(batch, WAYS), rtol=0, atol=0)
    with pytest.raises(ValueError, match="^mode: 'tent' is not available for MAML"):
        TTALearner(maml, "tent")


@pytest.mark.parametrize("args, kwargs, error, words", [
    ((None, "bn"), {}, TypeError, "^learner: expected a metarobust Learner, got NoneType"),
    (("L", "tnet"), {}, ValueError, "^mode: expected one of none, bn, tent; got 'tnet'"),
    (("L", "tent"), {"lr": 0.0}, ValueError, "^lr: must be finite and > 0, got 0.0"),
    (("L", "tent"), {"lr": float("nan")}, ValueError, "^lr: must be finite and > 0"),
    (("L", "tent"), {"steps": 0}, ValueError, "^steps: must be >= 1, got 0"),
    (("L", "tent"), {"steps": 1.5}, TypeError, "^steps: expected an int, got 1.5"),
])
def test_bad_arguments_are_named(args, kwargs, error, words):
    args = tuple(_net_learner() if a == "L" else a for a in args)
    with pytest.raises(error, match=words):
        TTALearner(*args, **kwargs)


def test_a_model_without_batch_norm_is_refused():
    learner = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 4)))
    assert TTALearner(learner, "none").mode == "none"
    for mode in ("bn", "tent"):
        with pytest.raises(ValueError, match=f"^mode: '{mode}' adapts BatchNorm layers"):
            TTALearner(learner, mode)
    frozen = ProtoNet(nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 4),
                                    nn.BatchNorm1d(4, affine=False)))
    with pytest.raises(ValueError, match="^mode: 'tent' adapts BatchNorm affine parameters"):
        TTALearner(frozen, "tent")


def test_training_through_the_wrapper_is_refused():
    adapted = TTALearner(_net_learner(), "bn")
    with pytest.raises(RuntimeError, match="for evaluation; train the wrapped learner"):
        adapted.meta_backward(image_batch(b=1, side=SIDE), WAYS)


def test_cli_eval_tta_on_a_trained_run(tmp_path, capsys):
    import json

    from _runs import train_glyph_run

    from metarobust.cli import main
    from metarobust.cli._common import TTA_CHOICES
    from metarobust.robust import TTA_MODES
    from metarobust.train import load_run

    assert TTA_CHOICES == TTA_MODES
    run = train_glyph_run(tmp_path / "run", 0)
    base = ["eval", str(run), "--episodes", "6", "--device", "cpu", "--seed", "5"]
    res = {}
    for mode in ("none", "bn", "tent"):
        assert main(base + ["--tta", mode]) == 0
        res[mode] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res[mode]["tta"] == mode and res[mode]["episodes"] == 6
    assert main(base) == 0  # the default is no adaptation
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res["none"]
    # the command's bn figure is TTALearner's on the same episodes
    learner = load_run(run)
    sampler = mr.EpisodeSampler(mr.train.load_dataset(learner.config, "test", "test"),
                                ways=learner.config.test_ways, shots=learner.config.test_shots,
                                queries=learner.config.test_queries, seed=5, dtype="uint8")
    direct = evaluate(TTALearner(learner, "bn"), sampler, 6, progress=False)
    assert math.isclose(res["bn"]["accuracy"], direct["accuracy"], rel_tol=1e-6)
    with pytest.raises(SystemExit):
        main(base + ["--tta", "tnet"])
    assert "--tta: invalid choice: 'tnet'" in capsys.readouterr().err


def test_suite_tta_rows_are_paired_with_the_plain_rows(tmp_path):
    from _runs import tiny_suite, train_glyph_run

    from metarobust.train import load_run

    run = train_glyph_run(tmp_path / "run", 0)
    grid = {"clean": [0], "corruption:gaussian_blur": [3], "gaussian_noise": [0.2],
            "domain_shift:glyphs": [0]}
    res = tiny_suite(run, grid, tta=("none", "bn", "tent"), per_episode=True)
    rows = {(r["family"], r["setting"]): r for r in res["rows"]}
    plain = [r for r in res["rows"] if "tta" not in r["setting"]]
    assert len(plain) == 4 and len(res["rows"]) == 4 + 2 * 3  # no TTA rows for noise
    alone = tiny_suite(run, grid, per_episode=True)
    for mode in ("bn", "tent"):
        # a suite run of the adapted learner: the same episodes, so the same figures
        ref = run_suite_with(TTALearner(load_run(run), mode), grid)
        for r in alone["rows"]:
            if r["family"] == "gaussian_noise":
                continue
            tta_row = rows[(r["family"], f"{r['setting']}, tta {mode}")]
            assert tta_row["per_episode"] == ref[r["family"]]["per_episode"]
            assert rows[(r["family"], r["setting"])]["per_episode"] == r["per_episode"]


def run_suite_with(learner, grid):
    from _runs import EPISODES

    from metarobust.robust import run_suite
    from metarobust.train import load_dataset

    cfg = learner.learner.config
    ds = load_dataset(cfg, "test", "test")
    res = run_suite(learner, ds, ways=cfg.test_ways, shots=cfg.test_shots,
                    queries=cfg.test_queries, grid=grid, episodes=EPISODES, progress=False,
                    source="glyphs", per_episode=True)
    return {r["family"]: r for r in res["rows"]}


@pytest.mark.parametrize("tta, error, words", [
    ("bn", TypeError, "^tta: expected a tuple of modes"),
    (("none", "tnet"), ValueError, "^tta: expected modes among none, bn, tent; got 'tnet'"),
])
def test_suite_bad_tta_is_named(tta, error, words):
    from metarobust.robust import run_suite

    ds = mr.data.glyphs(num_classes=10, per_class=6, image_size=16, seed=0)
    learner = mr.learners.ProtoNet(mr.models.build_model("conv4_finn", 1, 16, filters=3))
    with pytest.raises(error, match=words):
        run_suite(learner, ds, ways=3, shots=1, grid={"clean": [0]}, episodes=2, tta=tta,
                  progress=False)
