"""The robustness suite and its report, on tiny glyph ProtoNet runs (seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metarobust.cli import main
from metarobust.config import TrainConfig
from metarobust.robust import check_grid, run_suite, suite_grid
from metarobust.robust.report import COLUMNS, format_table, load_result, read_csv
from metarobust.train import Trainer, load_dataset, load_run

GRID = {
    "clean": [0],
    "label_noise_symmetric": [0, 0.5],
    "label_noise_paired": [1.0],
    "label_noise_outlier": [0.5],
    "gaussian_noise": [0.2],
    "fgsm": [8 / 255],
    "pgd": [8 / 255],
    "pgd_support": [8 / 255],
    "domain_shift:glyphs": [0],
}
EPISODES = 6


def _train(out: Path, seed: int) -> Path:
    cfg = TrainConfig(learner="protonet", dataset="glyphs", model="conv4_mini", image_size=16,
                      glyph_classes=30, ways=5, shots=1, queries=3, test_queries=3,
                      episodes=4, val_every=10**6, val_episodes=4, device="cpu", seed=seed)
    Trainer(cfg, out, progress=False).fit()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    return _train(base / "run_a", 0), _train(base / "run_b", 1)


def _suite(run: Path, grid=GRID, **kw):
    learner = load_run(run)
    cfg = learner.config
    ds = load_dataset(cfg, "test", "test")
    kw = {"episodes": EPISODES, "pgd_steps": 2, "progress": False, "source": "glyphs", **kw}
    return run_suite(learner, ds, ways=cfg.test_ways, shots=cfg.test_shots,
                     queries=cfg.test_queries, grid=grid, run=str(run), **kw)


def test_rows_cover_the_grid_and_are_deterministic(runs):
    res = _suite(runs[0])
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
    again = _suite(runs[0])
    assert again["rows"] == rows


def test_report_files_are_consistent(runs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["robustness", str(runs[0]), "--suite", "quick", "--families", "clean",
                 "label_noise_symmetric", "gaussian_noise", "fgsm", "--episodes", "4",
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    stdout = capsys.readouterr().out
    paths = json.loads(stdout.strip().splitlines()[-1])
    assert {Path(paths[k]).name for k in ("json", "csv", "png")} == {
        "robustness.json", "robustness.csv", "robustness.png"}
    result = load_result(out)
    assert result["run"] == str(runs[0]) and result["suite"] == "quick"
    rows = result["rows"]
    assert paths["rows"] == len(rows) > 0
    assert read_csv(out / "robustness.csv") == rows  # same rows, floats read back equal
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["family"] for r in rows} == {"clean", "label_noise_symmetric", "gaussian_noise",
                                           "fgsm"}
    assert all(0 <= r["accuracy"] <= 1 and r["ci95"] >= 0 and r["episodes"] == 4 for r in rows)
    assert "label_noise_symmetric" in stdout and "8/255" in stdout
    assert not (Path(runs[0]) / "robustness.json").exists()  # --out was honoured


def test_episode_shape_flags(runs, tmp_path, capsys):
    """The runs test at 5 ways: the default stays 5; --ways/--shots/--queries override it."""
    common = ["--families", "clean", "--episodes", "2", "--no-progress", "--device", "cpu"]
    assert main(["robustness", str(runs[0]), "--out", str(tmp_path / "a"), *common]) == 0
    assert (load_result(tmp_path / "a")["ways"], load_result(tmp_path / "a")["shots"]) == (5, 1)
    assert main(["robustness", str(runs[0]), "--out", str(tmp_path / "b"), "--ways", "3",
                 "--shots", "2", "--queries", "1", *common]) == 0
    res = load_result(tmp_path / "b")
    assert (res["ways"], res["shots"], res["queries"]) == (3, 2, 1)
    assert res["rows"][0]["setting"] == "3-way 2-shot"
    assert main(["robustness", str(runs[0]), "--out", str(tmp_path / "c"), "--prototype",
                 "filtered_mean", *common]) == 0
    assert load_result(tmp_path / "c")["prototype"] == "filtered_mean"
    capsys.readouterr()
    assert main(["robustness", str(runs[0]), "--ways", "0", *common]) == 2
    assert "ways: must be >= 1" in capsys.readouterr().err


def test_compare_plots_several_runs(runs, tmp_path, capsys):
    a, b = runs
    common = ["--families", "clean", "gaussian_noise", "--episodes", "4", "--no-progress",
              "--suite", "quick"]
    assert main(["robustness", str(a), *common]) == 0  # into the run directory
    capsys.readouterr()
    out = tmp_path / "cmp"
    # b has no robustness.json yet: it is evaluated (and its report written to its folder);
    # a's saved result is read back
    assert main(["robustness", str(b), "--compare", str(a), "--out", str(out), *common]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0]
    assert "run_b" in header and "run_a" in header
    assert (out / "robustness.png").stat().st_size > 10_000
    assert load_result(out)["run"] == str(b)
    # a result file works as well as a run directory
    assert main(["robustness", str(b), "--compare", str(Path(a) / "robustness.json"),
                 "--out", str(tmp_path / "cmp2"), *common]) == 0
    bad = main(["robustness", str(b), "--compare", str(tmp_path / "nothing"), *common])
    assert bad == 2
    assert "compare:" in capsys.readouterr().err


def test_format_table_has_one_column_per_run(runs):
    res = _suite(runs[0], {"clean": [0], "fgsm": [4 / 255]}, episodes=3)
    table = format_table([res, {**res, "run": "/x/other"}])
    assert "run_a" in table.splitlines()[0] and "other" in table.splitlines()[0]
    assert "4/255" in table


def test_missing_domain_data_is_skipped_with_a_warning(runs, tmp_path):
    lines: list[str] = []
    res = _suite(runs[0], {"clean": [0], "domain_shift:fashion_mnist": [0]},
                 fashion_mnist_root=tmp_path, warn=lines.append, episodes=3)
    assert [r["family"] for r in res["rows"]] == ["clean"]
    assert res["skipped"][0]["family"] == "domain_shift:fashion_mnist"
    assert len(lines) == 1 and "apt-get install -y dataset-fashion-mnist" in lines[0]


def test_fashion_mnist_shift_is_resized_and_inverted(runs):
    root = Path("/usr/share/datasets/fashion-mnist")
    if not list(root.glob("t10k-images-idx*")):
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")
    res = _suite(runs[0], {"domain_shift:fashion_mnist": [0],
                           "domain_shift:fashion_mnist_inverted": [0]}, episodes=3)
    settings = [r["setting"] for r in res["rows"]]
    assert settings == ["5-way 1-shot, fashion_mnist/t10k",
                        "5-way 1-shot, fashion_mnist/t10k, inverted"]


def test_omniglot_shift_on_real_data(runs, data_root):
    res = _suite(runs[0], {"domain_shift:omniglot": [0]}, episodes=3, data_root=data_root)
    assert res["rows"][0]["setting"] == "5-way 1-shot, omniglot/evaluation"


def test_corruption_cells(runs):
    pytest.importorskip("metarobust.robust.corruptions")
    res = _suite(runs[0], {"clean": [0], "corruption:gaussian_blur": [1, 5]}, episodes=3)
    assert [r["strength"] for r in res["rows"]] == [0.0, 1.0, 5.0]
    assert res["rows"][1]["setting"] == "5-way 1-shot, query"


@pytest.mark.parametrize("grid,words", [
    ({"bogus": [1]}, "unknown family 'bogus'"),
    ({"domain_shift:mars": [0]}, "unknown domain-shift target 'mars'"),
    ({"label_noise_paired": [1.5]}, "must be in [0, 1]"),
    ({"label_noise_paired": [float("nan")]}, "must be in [0, 1]"),
    ({"fgsm": [-1 / 255]}, "finite and >= 0"),
    ({"gaussian_noise": []}, "at least one strength"),
    ({"clean": [0.3]}, "takes no strength"),
    ({}, "non-empty mapping"),
])
def test_bad_grids(grid, words):
    with pytest.raises((ValueError, TypeError)) as err:
        check_grid(grid)
    assert words in str(err.value)


def test_bad_severity():
    pytest.importorskip("metarobust.robust.corruptions")
    with pytest.raises(ValueError, match="whole numbers 1..5"):
        check_grid({"corruption:gaussian_blur": [0]})
    with pytest.raises(ValueError, match="unknown corruption 'melt'"):
        check_grid({"corruption:melt": [1]})


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


def test_suite_levels_grow():
    pytest.importorskip("metarobust.robust.corruptions")
    quick, default, full = (suite_grid(s, "omniglot") for s in ("quick", "default", "full"))
    assert set(quick) <= set(default) <= set(full)
    for fam in default:
        assert set(default[fam]) <= set(full[fam])
    assert "domain_shift:fashion_mnist" in quick and "domain_shift:glyphs" in quick
    assert list(suite_grid("quick", "glyphs")).count("domain_shift:omniglot") == 1
    assert all(np.isfinite(v).all() for v in map(np.asarray, full.values()))


def test_maml_runs_through_the_suite(tmp_path):
    cfg = TrainConfig(learner="fomaml", dataset="glyphs", model="conv4_mini", image_size=16,
                      glyph_classes=30, ways=5, shots=1, queries=3, test_queries=3,
                      meta_batch=2, episodes=2, val_every=10**6, val_episodes=2,
                      device="cpu", seed=0)
    Trainer(cfg, tmp_path / "maml", progress=False).fit()
    res = _suite(tmp_path / "maml", {"clean": [0], "label_noise_symmetric": [1.0],
                                     "fgsm": [8 / 255], "pgd_support": [8 / 255]}, episodes=2)
    assert len(res["rows"]) == 5  # label noise at 1 and 5 shots
    assert all(0 <= r["accuracy"] <= 1 for r in res["rows"])
