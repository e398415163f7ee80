"""Learners and the evaluator on variable-way episodes: ProtoNet's loss, gradients and
accuracies equal those of each episode run on its own as a fixed-way Episode; MAML refuses
them with a named error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarobust as mr


def sampler(dtype: str = "float32") -> mr.VariableEpisodeSampler:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12, dtype=np.int64), 9)
    images = rng.integers(0, 256, (len(labels), 1, 8, 8), dtype=np.uint8)
    return mr.VariableEpisodeSampler((images, labels), seed=3, dtype=dtype, min_ways=2,
                                     max_ways=6, max_support=30)


def protonet() -> mr.learners.ProtoNet:
    torch.manual_seed(0)
    return mr.learners.ProtoNet(mr.models.build_model("conv4_finn", 1, 8, filters=3))


def grads(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in m.parameters()]


def test_protonet_matches_episodes_run_one_by_one():
    batch = sampler().sample_batch(0, 4)
    assert len(set(batch.ways.tolist())) > 1, "the batch mixes numbers of ways"
    net = protonet()
    stats = net.meta_backward(batch, None)
    got = grads(net)
    net.zero_grad()
    losses, accs = [], []
    for j in range(4):
        ep = batch[j]
        one = mr.Episode(ep.support_x[None], ep.support_y[None], ep.query_x[None],
                         ep.query_y[None], ep.classes[None])
        s = net.meta_backward(one, int(ep.ways))
        losses.append(s["loss"])
        accs.append(s["accuracy"])
    want = [g / 4 for g in grads(net)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert stats["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert stats["accuracy"] == pytest.approx(np.mean(accs), rel=1e-6)
    net.eval()
    per = net.evaluate_batch(batch, None)
    assert per.shape == (4,)
    for j in range(4):
        ep = batch[j]
        one = ep.as_episode()
        assert float(per[j]) == pytest.approx(float(net.evaluate_batch(one, int(ep.ways))[0]))


def test_evaluate_takes_a_variable_sampler():
    s = sampler("uint8")
    net = protonet()
    out = mr.evaluate.evaluate(net, s, episodes=7, batch_size=3, progress=False)
    info = s.describe(0, 7)
    assert out["episodes"] == 7
    assert out["ways"] == pytest.approx(info[:, 1].mean())
    net.eval()
    accs = torch.cat([net.evaluate_batch(s.sample_batch(b, n), None)
                      for b, n in ((0, 3), (3, 3), (6, 1))])
    assert out["accuracy"] == pytest.approx(float(accs.double().mean()), rel=1e-6)


def test_maml_refuses_variable_way_episodes_by_name():
    maml = mr.learners.MAML(mr.models.build_model("conv4_finn", 1, 8, filters=3), ways=5)
    batch = sampler().sample_batch(0, 2)
    with pytest.raises(ValueError, match="batch: variable-way episodes.*fixed-way episodes"):
        maml.meta_backward(batch, None)
    for family in (mr.learners.Reptile(mr.models.build_model("conv4_finn", 1, 8, filters=3),
                                       ways=5),
                   mr.learners.ProtoMAML(mr.models.build_model("conv4_finn", 1, 8, filters=3))):
        with pytest.raises(ValueError, match=r"batch: variable-way .* cannot meta-train"):
            family.meta_backward(batch, None)
    with pytest.raises(ValueError, match="batch: variable-way episodes"):
        maml.evaluate_batch(batch, None)
    with pytest.raises(ValueError, match="sampler: variable-way episodes"):
        mr.evaluate.evaluate(maml, sampler(), episodes=2, progress=False)


def test_protonet_refuses_a_ways_argument_and_single_episodes():
    net = protonet()
    s = sampler()
    with pytest.raises(ValueError, match="ways: variable-way episodes carry their own"):
        net.meta_backward(s.sample_batch(0, 2), 5)
    with pytest.raises(ValueError, match="batch: expected a batch"):
        net.evaluate_batch(s.sample(0), None)
    with pytest.raises(TypeError, match="as_episode"):
        s.sample_batch(0, 2).as_episode()
