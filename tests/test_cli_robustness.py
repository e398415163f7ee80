"""`metarobust robustness` (metarobust.cli.robustness) on tiny glyph runs: the episode-shape
flags, and --compare plotting several runs."""

from __future__ import annotations

from pathlib import Path

from metarobust.cli import main
from metarobust.robust.report import load_result


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


def test_an_unpaired_comparison_is_flagged_or_evaluated_again(runs, tmp_path, capsys):
    a, b = runs
    common = ["--families", "clean", "label_noise_symmetric", "--no-progress", "--suite",
              "quick"]
    # a's report on 4 episodes, seed 9: not the episodes of b's 6-episode, seed-1234 run
    assert main(["robustness", str(a), "--out", str(tmp_path / "a4"), "--episodes", "4",
                 "--seed", "9", *common]) == 0
    capsys.readouterr()
    assert main(["robustness", str(b), "--out", str(tmp_path / "cmp"), "--episodes", "6",
                 "--compare", str(tmp_path / "a4" / "robustness.json"), *common]) == 0
    captured = capsys.readouterr()
    assert "not on the same episodes (seed 9 (not 1234), episodes 4 (not 6))" in captured.err
    header, *lines = captured.out.splitlines()
    assert "run_a*" in header
    assert any(line.startswith("run_a* unpaired: evaluated on other episodes") for line in lines)
    # a run directory whose report is unpaired is evaluated again on b's episodes
    assert main(["robustness", str(a), "--episodes", "4", "--seed", "9", *common]) == 0
    assert main(["robustness", str(b), "--out", str(tmp_path / "cmp2"), "--episodes", "6",
                 "--compare", str(a), *common]) == 0
    captured = capsys.readouterr()
    assert "evaluating it again" in captured.err and "run_a*" not in captured.out
    again = load_result(a)
    assert (again["seed"], again["episodes"]) == (1234, 6)
