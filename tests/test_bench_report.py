"""metarobust.bench.report: table formatting, machine description and the targets."""

from __future__ import annotations

import io
import math

import pytest

from metarobust.bench import report


@pytest.mark.parametrize("value, text", [
    (12345.6, "12,346"), (-1500.0, "-1,500"), (123.45, "123.5"), (12.345, "12.35"),
    (1.23456, "1.235"), (0.0, "0.000"), (math.nan, "-"), (7, "7"), ("x", "x"),
])
def test_fmt(value, text):
    assert report._fmt(value) == text


def test_print_table_aligns_numbers_right_and_text_left():
    out = io.StringIO()
    report.print_table([{"name": "a", "ms": 1.5, "n": 3},
                        {"name": "longer", "ms": 1234.0, "n": 10}], "Title", out)
    lines = out.getvalue().splitlines()
    assert lines == ["", "Title",
                     "name       ms   n",
                     "------  -----  --",
                     "a       1.500   3",
                     "longer  1,234  10"]


def test_print_table_mixed_column_is_text_and_missing_cells_empty():
    out = io.StringIO()
    report.print_table([{"a": 1.0, "b": "x"}, {"a": "-"}], file=out)
    assert out.getvalue().splitlines() == ["a      b", "-----  -", "1.000  x", "-"]


def test_print_table_without_rows():
    out = io.StringIO()
    report.print_table([], "Empty", out)
    assert out.getvalue() == "\nEmpty\n(no rows)\n"


def test_machine_info():
    info = report.machine_info()
    assert {"cpu", "cores", "usable cores", "torch threads", "rayon threads", "python",
            "torch", "numpy", "metarobust"} == set(info)
    assert info["usable cores"] >= 1 and info["rayon threads"] >= 1


def _sampler_rows(rust: float, batch: int = 64) -> list[dict]:
    eps = {"rust": rust, "numpy": 10.0, "dataloader": 1.0, "memcpy": 50.0}
    return [{"setting": "5w1s15q", "dtype": "uint8", "batch": batch, "candidate": c,
             "episodes/s": v} for c, v in eps.items()]


def _kernel_rows(shape: str, rust_ms: float) -> list[dict]:
    return [{"shape (B,N,K,Q,D)": shape, "mode": "fwd", "candidate": c, "ms/call": ms,
             "GFLOP/s": 1.0} for c, ms in (("rust", rust_ms), ("torch_gemm", 2.0))]


def _maml_rows(auto_tasks_s: float) -> list[dict]:
    return [{"order": "second", "tasks": 32, "candidate": c, "tasks/s": v, "peak MiB": 10.0}
            for c, v in (("reference (learn2learn-style)", 10.0),
                         ("metarobust threads (auto)", auto_tasks_s))]


def _met(rows: list[dict]) -> dict[str, str]:
    return {r["target"]: r["met"] for r in rows}


def test_check_targets_flags_missed_and_met_targets():
    got = _met(report.check_targets(_sampler_rows(20.0), _kernel_rows("(32,5,5,75,64)", 1.0),
                                    _maml_rows(12.0)))
    assert got == {
        "sampler 5w1s15q uint8: rust/numpy": "NO",          # 2 < 3
        "sampler 5w1s15q uint8: rust/dataloader": "NO",     # 20 < 50
        "sampler 5w1s15q uint8: rust % memcpy": "yes",      # 40% >= 40%
        "kernels (32,5,5,75,64) fwd: rust/best torch": "NO",  # 2 < 3
        "maml second order, 32 tasks: auto (threads) / reference": "NO",  # 1.2 < 1.3
    }
    got = _met(report.check_targets(_sampler_rows(60.0), _kernel_rows("(1,64,5,320,640)", 1.0),
                                    _maml_rows(13.0)))
    assert set(got.values()) == {"yes"}  # large kernel shapes: at least 1x


def test_check_targets_skips_what_it_does_not_cover():
    assert report.check_targets(_sampler_rows(20.0, batch=8)) == []   # not batch 64
    assert report.check_targets(kernel_rows=_kernel_rows("(2,5,1,10,8)", 1.0)) == []
    assert report.check_targets(maml_rows=_maml_rows(1.0), device="cuda") == []  # CPU only
    assert report.check_targets() == []


def test_corruption_target_is_an_upper_bound():
    row = {"corruption": "rotate", "cache": "built", "batch": 64, "setting": "5w1s15q",
           "severity": 3, "dtype": "uint8"}
    rows = [{**row, "x clean": 2.5}, {**row, "dtype": "float32", "x clean": 1.5},
            {**row, "cache": "off", "x clean": 9.0}, {**row, "corruption": "clean",
                                                      "cache": "-", "x clean": 1.0}]
    got = report.check_targets(corruption_rows=rows)
    assert [(r["measured"], r["goal"], r["met"]) for r in got] == [
        (2.5, report.TARGETS["corrupted_vs_clean"], "NO"),
        (1.5, report.TARGETS["corrupted_vs_clean"], "yes")]
    assert "(at most)" in got[0]["target"]
