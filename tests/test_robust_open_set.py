"""Open-set queries (metarobust.robust.open_set and the suite's ``open_set`` family): the
AUROC against a brute-force pairwise count and hand-made scores, the episodes (the unknowns
come from classes outside the episode, in the asked fraction, deterministically), the scores
against a NumPy ProtoNet, the suite rows and the report's columns, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metarobust.learners import MAML, ProtoNet
from metarobust.models import build_model
from metarobust.robust import check_grid, run_suite
from metarobust.robust.open_set import (
    OpenSetSampler,
    auroc,
    evaluate_open_set,
    open_set_scores,
    scores_of,
    transformation_change,
)
from metarobust.robust.report import AUROC_COLUMNS, COLUMNS, format_table, read_csv, write_report

CLASSES, PER = 12, 6


def _dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their class (so a test can tell where an item came from)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(CLASSES * PER, 1, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int64), PER)
    images[:, 0, 0, 0] = labels
    return images, labels


def _class_of(x: torch.Tensor) -> np.ndarray:
    return np.rint(x[..., 0, 0, 0].numpy() * 255).astype(int)


def _pairwise(k: np.ndarray, u: np.ndarray) -> float:
    """The Mann-Whitney statistic by counting every (known, unknown) pair."""
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in k for b in u)
    return wins / (len(k) * len(u))


def test_auroc_matches_a_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    k = rng.integers(0, 6, size=(20, 9)).astype(float)  # few values: many ties
    u = rng.integers(0, 5, size=(20, 7)).astype(float)
    got = auroc(torch.from_numpy(k), u)
    want = [_pairwise(a, b) for a, b in zip(k, u)]
    assert got.shape == (20,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_auroc_on_hand_made_scores():
    assert float(auroc([3.0, 2.0], [1.0, 0.0])) == 1.0
    assert float(auroc([1.0, 0.0], [3.0, 2.0])) == 0.0
    assert float(auroc([1.0, 1.0, 1.0], [1.0])) == 0.5
    # pairs: 1<2, 1>0, 2=2 (half), 2>0 -> 2.5 / 4
    assert float(auroc([1.0, 2.0], [2.0, 0.0])) == 0.625


@pytest.mark.parametrize("known, unknown, match", [
    ([1.0, float("nan")], [0.0], "known: scores must be finite"),
    ([1.0], [float("inf")], "unknown: scores must be finite"),
    (np.zeros((2, 0)), np.zeros((2, 3)), r"known: expected scores .* shape \(2, 0\)"),
    (np.zeros((2, 3)), np.zeros((3, 3)), "2 and 3 episodes"),
    (np.zeros((2, 3, 4)), np.zeros((2, 3)), "known: expected scores"),
])
def test_auroc_bad_inputs(known, unknown, match):
    with pytest.raises(ValueError, match=match):
        auroc(known, unknown)


@pytest.mark.parametrize("bad, what", [
    (["a", "b"], "dtype <U1"), ([[1.0, 2.0], [3.0]], "ragged"), (range(3), "range"),
    (np.array([True, False]), "dtype bool"), (np.array([1j]), "dtype complex128"),
])
def test_auroc_refuses_non_numbers(bad, what):
    with pytest.raises(TypeError, match=f"known: expected real scores .*{what}"):
        auroc(bad, [1.0])


@pytest.mark.parametrize("fraction, unknowns", [(0.5, 12), (0.25, 4), (0.6, 18)])
def test_open_set_episodes(fraction, unknowns):
    data = _dataset()
    s = OpenSetSampler(data, ways=4, shots=2, queries=3, unknown_fraction=fraction, seed=7)
    b = s.sample_batch(0, 5)
    ep = b.episode
    assert s.unknowns == unknowns and b.unknown_x.shape == (5, unknowns, 1, 8, 8)
    assert unknowns / (unknowns + 12) == pytest.approx(fraction, abs=0.03)
    assert ep.support_x.shape == (5, 8, 1, 8, 8) and ep.query_x.shape == (5, 12, 1, 8, 8)
    assert int(ep.support_y.max()) == 3 and int(ep.query_y.max()) == 3
    for j in range(5):
        classes = ep.classes[j].numpy()
        np.testing.assert_array_equal(_class_of(ep.support_x[j]), classes[ep.support_y[j]])
        np.testing.assert_array_equal(_class_of(ep.query_x[j]), classes[ep.query_y[j]])
        assert not set(_class_of(b.unknown_x[j])) & set(classes)
    again = OpenSetSampler(data, ways=4, shots=2, queries=3, unknown_fraction=fraction,
                           seed=7).sample_batch(2, 2)
    assert torch.equal(again.unknown_x, b.unknown_x[2:4])
    assert torch.equal(again.episode.query_x, ep.query_x[2:4])


@pytest.mark.parametrize("kw, error, match", [
    ({"unknown_fraction": 1.0}, ValueError, r"unknown_fraction: must be in \[0, 1\)"),
    ({"unknown_fraction": -0.1}, ValueError, "unknown_fraction"),
    ({"unknown_fraction": "half"}, TypeError, "unknown_fraction: expected a real number"),
    ({"unknown_fraction": 0.9}, ValueError, "the dataset has 12"),
    ({"ways": 0}, ValueError, "ways"),
])
def test_open_set_sampler_bad_arguments(kw, error, match):
    args = {"ways": 4, "shots": 1, "queries": 3, "unknown_fraction": 0.5, **kw}
    with pytest.raises(error, match=match):
        OpenSetSampler(_dataset(), **args)


def test_protonet_scores_match_a_numpy_reference():
    learner = ProtoNet(nn.Flatten(), scale=0.01).eval()
    assert scores_of(learner) == ("msp", "neg_distance", "snatcher")
    b = OpenSetSampler(_dataset(), ways=4, shots=2, queries=3, unknown_fraction=0.5,
                       seed=3).sample_batch(0, 3)
    known, unknown, correct = open_set_scores(learner, b)
    ep = b.episode
    for j in range(3):
        sx = ep.support_x[j].reshape(8, -1).double().numpy()
        protos = np.stack([sx[ep.support_y[j].numpy() == c].mean(0) for c in range(4)])
        q = torch.cat([ep.query_x[j], b.unknown_x[j]]).reshape(24, -1).double().numpy()
        d = ((q[:, None, :] - protos[None]) ** 2).sum(-1)
        logits = -0.01 * d
        p = np.exp(logits - logits.max(1, keepdims=True))
        msp = (p / p.sum(1, keepdims=True)).max(1)
        got_msp = torch.cat([known["msp"][j], unknown["msp"][j]]).numpy()
        got_neg = torch.cat([known["neg_distance"][j], unknown["neg_distance"][j]]).numpy()
        np.testing.assert_allclose(got_msp, msp, rtol=1e-4)
        np.testing.assert_allclose(got_neg, -d.min(1), rtol=1e-4)
        np.testing.assert_array_equal(correct[j].numpy(),
                                      d[:12].argmin(1) == ep.query_y[j].numpy())


def _change_reference(protos: np.ndarray, q: np.ndarray, c: int) -> float:
    """The transformation change by loops: attention rows over squared distances."""
    w = len(protos)
    d = ((protos[:, None] - protos[None]) ** 2).sum(-1)
    tau = d.sum() / (w * (w - 1))

    def t(p):
        out = np.zeros_like(p)
        for i in range(w):
            logits = np.array([-((p[i] - p[j]) ** 2).sum() / tau for j in range(w)])
            a = np.exp(logits - logits.max())
            out[i] = (a / a.sum()) @ p
        return out

    swapped = protos.copy()
    swapped[c] = q
    return float(((t(swapped) - t(protos)) ** 2).sum())


def test_transformation_change_matches_a_loop_reference():
    rng = np.random.default_rng(4)
    protos, queries = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4, 3))
    predicted = rng.integers(0, 5, size=(2, 4))
    got = transformation_change(torch.from_numpy(protos), torch.from_numpy(queries),
                                torch.from_numpy(predicted))
    want = [[_change_reference(protos[b], queries[b, i], predicted[b, i]) for i in range(4)]
            for b in range(2)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # a query equal to its prototype changes nothing
    same = transformation_change(torch.from_numpy(protos), torch.from_numpy(protos[:, :2]),
                                 torch.tensor([[0, 1], [0, 1]]))
    assert float(same.abs().max()) < 1e-12


def test_snatcher_scores_follow_the_embeddings():
    learner = ProtoNet(nn.Flatten()).eval()
    b = OpenSetSampler(_dataset(), ways=4, shots=2, queries=3, unknown_fraction=0.5,
                       seed=3).sample_batch(0, 2)
    known, unknown, _ = open_set_scores(learner, b)
    ep = b.episode
    for j in range(2):
        sx = ep.support_x[j].reshape(8, -1).double().numpy()
        protos = np.stack([sx[ep.support_y[j].numpy() == c].mean(0) for c in range(4)])
        q = torch.cat([ep.query_x[j], b.unknown_x[j]]).reshape(24, -1).double().numpy()
        pred = ((q[:, None] - protos[None]) ** 2).sum(-1).argmin(1)
        want = [-_change_reference(protos, q[i], pred[i]) for i in range(24)]
        got = torch.cat([known["snatcher"][j], unknown["snatcher"][j]]).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_open_set_scores_refuses_an_episode():
    b = OpenSetSampler(_dataset(), ways=4, shots=1, queries=3, unknown_fraction=0.5
                       ).sample_batch(0, 1)
    with pytest.raises(TypeError, match="batch: expected an OpenSetBatch, got Episode"):
        open_set_scores(ProtoNet(nn.Flatten()), b.episode)


def test_evaluate_open_set_needs_an_unknown():
    with pytest.raises(ValueError, match="unknown_fraction: 0.01 gives no unknown query"):
        evaluate_open_set(ProtoNet(nn.Flatten()), _dataset(), ways=4, shots=1, queries=3,
                          unknown_fraction=0.01, episodes=2)


def test_suite_rows_and_report(tmp_path):
    learner = ProtoNet(nn.Flatten())
    res = run_suite(learner, _dataset(), ways=4, shots=1, queries=3, episodes=6,
                    grid={"clean": [0], "open_set": [0.5]}, progress=False, per_episode=True)
    rows = {r["setting"]: r for r in res["rows"] if r["family"] == "open_set"}
    assert set(rows) == {f"4-way 1-shot, score {k}" for k in ("msp", "neg_distance", "snatcher")}
    direct = evaluate_open_set(learner, _dataset(), ways=4, shots=1, queries=3,
                               unknown_fraction=0.5, episodes=6, seed=1234)
    for score in ("msp", "neg_distance", "snatcher"):
        r = rows[f"4-way 1-shot, score {score}"]
        assert r["accuracy"] == direct[score]["accuracy"]
        assert r["auroc"] == direct[score]["auroc"] and 0.0 <= r["auroc"] <= 1.0
        assert r["auroc_per_episode"] == direct[score]["auroc_per_episode"]
        assert r["auroc_ci95"] > 0.0
    write_report(res, tmp_path)
    back = read_csv(tmp_path / "robustness.csv")
    with open(tmp_path / "robustness.csv") as f:
        assert f.readline().strip().split(",") == list(COLUMNS + AUROC_COLUMNS)
    assert "auroc" not in back[0]  # the clean row
    assert back[1]["auroc"] == res["rows"][1]["auroc"]
    assert "AUROC" in format_table([res])


def test_maml_gets_the_softmax_score_only():
    torch.manual_seed(0)
    maml = MAML(build_model("conv4_finn", 1, 8, filters=3), ways=4, inner_steps=1)
    assert scores_of(maml) == ("msp",)
    res = run_suite(maml, _dataset(), ways=4, shots=1, queries=3, episodes=3,
                    grid={"open_set": [0.5]}, progress=False)
    assert [r["setting"] for r in res["rows"]] == ["4-way 1-shot, score msp"]


def test_too_few_classes_is_skipped_with_a_warning():
    lines: list[str] = []
    res = run_suite(ProtoNet(nn.Flatten()), _dataset(), ways=4, shots=1, queries=3,
                    episodes=2, grid={"open_set": [0.8]}, progress=False, warn=lines.append)
    assert res["rows"] == [] and res["skipped"][0]["family"] == "open_set"
    assert "the dataset has 12" in lines[0]


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5])
def test_grid_refuses_fractions_outside_the_open_interval(bad):
    with pytest.raises(ValueError, match=r"grid\['open_set'\]: unknown fractions must lie"):
        check_grid({"open_set": [bad]})
