"""metarobust certify: a run's certified accuracy by randomized smoothing, its files and its
summary; the shared test-episode options (as eval's); bad arguments named."""

from __future__ import annotations

import json

import pytest

from metarobust.cli import main
from metarobust.robust.certify_report import certified_curve

ARGS = ["--episodes", "2", "--samples", "60", "--n0", "10", "--alpha", "0.05", "--ways", "3",
        "--queries", "2", "--device", "cpu"]


def test_certify_writes_its_files_and_a_summary(runs, tmp_path, capsys):
    run_a, _ = runs
    assert main(["certify", str(run_a), *ARGS, "--radii", "0,0.1", "--out",
                 str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "certify.json").read_text())
    assert (tmp_path / "certify.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary == {k: v for k, v in saved.items() if k != "queries"}
    assert saved["ways"] == 3 and saved["episodes"] == 2 and len(saved["queries"]) == 12
    assert [r["radius"] for r in saved["radii"]] == [0.0, 0.1]
    # the curve at radius 0 is the reported certified accuracy at 0 (pooled = mean here:
    # every episode has the same number of queries)
    grid, acc = certified_curve(saved)
    assert grid[0] == 0.0
    assert acc[0] == pytest.approx(saved["radii"][0]["certified_accuracy"])
    assert all(a >= b for a, b in zip(acc, acc[1:]))


def test_certify_bad_arguments_are_named(runs, tmp_path, capsys):
    run_a, _ = runs
    for extra, words in [(["--radii", "0,x"], "radii: expected comma-separated numbers"),
                         (["--sigma", "0"], "sigma"), (["--samples", "0"], "samples"),
                         (["--ways", "0"], "ways: must be >= 1"),
                         (["--inner-steps", "2"], "inner_steps: only MAML-family runs")]:
        assert main(["certify", str(run_a), *ARGS, *extra, "--out", str(tmp_path)]) == 2
        assert words in capsys.readouterr().err


def test_robustness_certified_l2_rows_from_the_command_line(runs, tmp_path, capsys):
    run_a, _ = runs
    assert main(["robustness", str(run_a), "--families", "clean", "certified_l2",
                 "--episodes", "3", "--certify-samples", "500", "--certify-episodes", "2",
                 "--certify-sigma", "0.25", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "robustness.json").read_text())
    rows = [r for r in res["rows"] if r["family"] == "certified_l2"]
    assert [r["strength"] for r in rows] == [0.0, 0.25, 0.5]  # the default suite's
    assert all(r["episodes"] == 2 for r in rows) and res["smoothing"]["sigma"] == 0.25
    assert all(a["accuracy"] >= b["accuracy"] for a, b in zip(rows, rows[1:]))
    capsys.readouterr()
    assert main(["robustness", str(run_a), "--families", "certified_l2", "--certify-sigma",
                 "0", "--out", str(tmp_path)]) == 2
    assert "sigma" in capsys.readouterr().err
