"""The robustness suite engine (metarobust.robust.suite, run_suite) on tiny glyph ProtoNet runs
(seconds, not minutes): rows over the grid, deterministic; domain-shift targets missing,
Fashion-MNIST and Omniglot; corruption cells; bad suites and arguments; a MAML run."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runs import EPISODES, GRID, tiny_suite

from metarobust.cli import main
from metarobust.config import TrainConfig
from metarobust.robust import run_suite, suite_grid
from metarobust.robust.report import COLUMNS
from metarobust.train import Trainer, load_dataset, load_run


def test_rows_cover_the_grid_and_are_deterministic(runs):
    res = tiny_suite(runs[0])
    rows = res["rows"]
    assert {r["family"] for r in rows} == set(GRID)
    for r in rows:
        assert set(r) == set(COLUMNS)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["ci95"] >= 0.0
        assert r["episodes"] == EPISODES
    # label noise at the run's shots (1) and at 5 shots
    settings = {r["setting"] for r in rows if r["family"] == "label_noise_symmetric"}
    assert settings == {"5-way 1-shot", "5-way 5-shot"}
    by = {(r["family"], r["setting"], r["strength"]): r["accuracy"] for r in rows}
    # same episodes in every cell: rate 0 is the clean cell itself
    assert by[("label_noise_symmetric", "5-way 1-shot", 0.0)] == by[("clean", "5-way 1-shot",
                                                                       0.0)]
    assert res["skipped"] == []
    again = tiny_suite(runs[0])
    assert again["rows"] == rows


def test_missing_domain_data_is_skipped_with_a_warning(runs, tmp_path):
    lines: list[str] = []
    res = tiny_suite(runs[0], {"clean": [0], "domain_shift:fashion_mnist": [0]},
                     fashion_mnist_root=tmp_path, warn=lines.append, episodes=3)
    assert [r["family"] for r in res["rows"]] == ["clean"]
    assert res["skipped"][0]["family"] == "domain_shift:fashion_mnist"
    assert len(lines) == 1 and "apt-get install -y dataset-fashion-mnist" in lines[0]


def test_fashion_mnist_shift_is_resized_and_inverted(runs):
    root = Path("/usr/share/datasets/fashion-mnist")
    if not list(root.glob("t10k-images-idx*")):
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
    res = tiny_suite(runs[0], {"domain_shift:fashion_mnist": [0],
                               "domain_shift:fashion_mnist_inverted": [0]}, episodes=3)
    settings = [r["setting"] for r in res["rows"]]
    assert settings == ["5-way 1-shot, fashion_mnist/t10k",
                        "5-way 1-shot, fashion_mnist/t10k, inverted"]


def test_omniglot_shift_on_real_data(runs, data_root):
    res = tiny_suite(runs[0], {"domain_shift:omniglot": [0]}, episodes=3, data_root=data_root)
    assert res["rows"][0]["setting"] == "5-way 1-shot, omniglot/evaluation"


def test_corruption_cells(runs):
    res = tiny_suite(runs[0], {"clean": [0], "corruption:gaussian_blur": [1, 5]}, episodes=3)
    assert [r["strength"] for r in res["rows"]] == [0.0, 1.0, 5.0]
    assert res["rows"][1]["setting"] == "5-way 1-shot, query"


def test_bad_suite_and_arguments(runs, capsys):
    with pytest.raises(ValueError, match="suite: expected one of quick, default, full"):
        suite_grid("huge")
    learner = load_run(runs[0])
    ds = load_dataset(learner.config, "test", "test")
    with pytest.raises(ValueError, match="suite: expected one of"):
        run_suite(learner, ds, ways=5, shots=1, suite="huge")
    with pytest.raises(ValueError, match="corrupt: expected one of"):
        run_suite(learner, ds, ways=5, shots=1, grid={"clean": [0]}, corrupt="all")
    with pytest.raises(ValueError, match="episodes"):
        run_suite(learner, ds, ways=5, shots=1, grid={"clean": [0]}, episodes=0)
    for kw, exc, words in ((dict(source="bogus"), ValueError, "source: expected one of glyphs"),
                           (dict(device="tpu"), ValueError, "device: "),
                           (dict(label_noise_shots=5), TypeError, "label_noise_shots: expected")):
        with pytest.raises(exc, match=words):
            run_suite(learner, ds, ways=5, shots=1, grid={"clean": [0]}, **kw)
    with pytest.raises(SystemExit):
        main(["robustness", str(runs[0]), "--suite", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert main(["robustness", str(runs[0]), "--families", "bogus", "--no-progress"]) == 2
    assert "unknown family 'bogus'" in capsys.readouterr().err


def test_maml_runs_through_the_suite(tmp_path):
    cfg = TrainConfig(learner="fomaml", dataset="glyphs", model="conv4_mini", image_size=16,
                      glyph_classes=30, ways=5, shots=1, queries=3, test_queries=3,
                      meta_batch=2, episodes=2, val_every=10**6, val_episodes=2,
                      device="cpu", seed=0)
    Trainer(cfg, tmp_path / "maml", progress=False).fit()
    res = tiny_suite(tmp_path / "maml", {"clean": [0], "label_noise_symmetric": [1.0],
                                         "fgsm": [8 / 255], "pgd_support": [8 / 255]}, episodes=2)
    assert len(res["rows"]) == 5  # label noise at 1 and 5 shots
    assert all(0 <= r["accuracy"] <= 1 for r in res["rows"])


@pytest.mark.parametrize("learner", ["matching", "relation", "r2d2", "metaoptnet", "protomaml",
                                     "reptile", "simpleshot", "baseline_pp", "meta_baseline",
                                     "tim"])
def test_each_learner_runs_through_every_family(tmp_path, learner):
    extra = {"inner_steps": 2} if learner in ("protomaml", "reptile") else {}
    if learner in ("simpleshot", "baseline_pp", "meta_baseline", "tim"):
        extra = {"batch_size": 16}  # two steps: pre-training (and a meta step)
    cfg = TrainConfig(learner=learner, dataset="glyphs", image_size=16, glyph_classes=30,
                      ways=5, shots=1, queries=3, test_queries=3, meta_batch=2, steps=2,
                      val_every=10**6, val_episodes=2, device="cpu", seed=0, **extra)
    Trainer(cfg, tmp_path / learner, progress=False).fit()
    grid = {**GRID, "corruption:gaussian_blur": [3]}
    res = tiny_suite(tmp_path / learner, grid, episodes=2)
    assert {r["family"] for r in res["rows"]} == set(grid)
    assert res["skipped"] == []
    assert all(0 <= r["accuracy"] <= 1 for r in res["rows"])
    # the attacks went through the learner's own forward pass: they do not help it
    by = {r["family"]: r["accuracy"] for r in res["rows"]
          if r["setting"].startswith("5-way 1-shot") and r["family"] in ("clean", "pgd")}
    assert by["pgd"] <= by["clean"]
