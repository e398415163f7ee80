"""The robustness report (metarobust.robust.report): the JSON, CSV and PNG files consistent
with each other (written through `metarobust robustness --out`), and the table with one
column per run."""

from __future__ import annotations

import json
from pathlib import Path

from _runs import tiny_suite

from metarobust.cli import main
from metarobust.robust.report import format_table, load_result, read_csv


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


def test_format_table_has_one_column_per_run(runs):
    res = tiny_suite(runs[0], {"clean": [0], "fgsm": [4 / 255]}, episodes=3)
    table = format_table([res, {**res, "run": "/x/other"}])
    assert "run_a" in table.splitlines()[0] and "other" in table.splitlines()[0]
    assert "4/255" in table


def test_label_noise_rows_show_the_fraction_they_corrupted(tmp_path):
    from metarobust.robust.report import format_table, read_csv, write_report

    rows = [{"family": "clean", "setting": "5-way 1-shot", "strength": 0.0, "effective": 0.0,
             "accuracy": 0.9, "ci95": 0.01, "episodes": 10},
            {"family": "label_noise_symmetric", "setting": "5-way 1-shot", "strength": 0.1,
             "effective": 0.2, "accuracy": 0.7, "ci95": 0.02, "episodes": 10},
            {"family": "label_noise_symmetric", "setting": "5-way 1-shot", "strength": 0.4,
             "effective": 0.4, "accuracy": 0.5, "ci95": 0.03, "episodes": 10}]
    result = {"run": "r", "ways": 5, "shots": 1, "episodes": 10, "rows": rows}
    table = format_table([result])
    assert "0.1→0.2" in table and "0.4→" not in table
    paths = write_report(result, tmp_path)
    assert read_csv(paths["csv"]) == rows
    # a report written before rows carried `effective` reads with the strength in its place
    old = [{k: v for k, v in r.items() if k != "effective"} for r in rows]
    assert "0.1→" not in format_table([{**result, "rows": old}])


def test_run_colours_stay_distinct_beyond_ten_runs():
    from matplotlib.colors import to_rgb

    from metarobust.robust.report import run_colours

    assert run_colours(3) == ["C0", "C1", "C2"]
    many = [to_rgb(c) for c in run_colours(15)]
    assert len(set(many)) == 15
    assert len({to_rgb(c) for c in run_colours(25)}) == 20  # tab20 repeats after 20
