"""The benchmark report: ``benchmark.json``, ``benchmark.csv``, ``benchmark.md`` and
``benchmark.png``.

``benchmark.json`` is the result object: the evaluation settings, ``methods`` (name,
learner, run, train_seconds, steps, eval_seconds) and ``rows`` (one per setting and method:
family, setting, strength, effective, accuracy, ci95, episodes, diff, diff_ci95, best);
``benchmark.csv`` holds the rows (floats written in full); ``benchmark.md`` is a table of
methods x settings: accuracy ± 95% CI in percent, under it the paired difference from the
reference method with its 95% CI, in bold the best method of a setting when its paired lead
over every other method is significant; ``benchmark.png`` has one panel per threat family,
one line per method (:func:`metarobust.robust.report.plot_results`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..robust.report import plot_results

__all__ = ["CSV_COLUMNS", "format_markdown", "read_csv", "write_benchmark"]

CSV_COLUMNS = ("method", "family", "setting", "strength", "effective", "accuracy", "ci95",
               "episodes", "diff", "diff_ci95", "best")
_ATTACKS = ("fgsm", "pgd", "pgd_support")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c]
                    for c in CSV_COLUMNS])
    return buf.getvalue().encode()


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``benchmark.csv``, typed as in the JSON."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def num(v: str) -> float | None:
        return None if v == "" else float(v)

    return [{"method": r["method"], "family": r["family"], "setting": r["setting"],
             "strength": float(r["strength"]), "effective": float(r["effective"]),
             "accuracy": float(r["accuracy"]), "ci95": float(r["ci95"]),
             "episodes": int(r["episodes"]), "diff": num(r["diff"]),
             "diff_ci95": num(r["diff_ci95"]), "best": r["best"] == "True"} for r in rows]


def _strength(family: str, strength: float) -> str:
    if family == "clean" or family.startswith("domain_shift:"):
        return ""
    if family in _ATTACKS:
        return f" {strength * 255:.3g}/255"
    return f" {strength:g}"


def _column(row: dict[str, Any], base: str) -> str:
    """A setting's column title: family and strength, and the setting when it is not the
    plain episode shape."""
    extra = "" if row["setting"] == base else f" ({row['setting']})"
    return f"{row['family']}{_strength(row['family'], row['strength'])}{extra}"


def _seconds(v: Any) -> str:
    if v is None:
        return "-"
    return f"{float(v):.1f}" if float(v) < 10 else f"{float(v):.0f}"


def _entry(row: dict[str, Any], reference: str) -> str:
    acc = f"{100 * row['accuracy']:.2f} ± {100 * row['ci95']:.2f}"
    if row["best"]:
        acc = f"**{acc}**"
    if row["method"] == reference:
        return f"{acc}<br>(reference)"
    if row["diff"] is None:
        return acc
    return f"{acc}<br>{100 * row['diff']:+.2f} ± {100 * row['diff_ci95']:.2f}"


def format_markdown(result: dict[str, Any]) -> str:
    """``benchmark.md``: the settings line, the table of methods x settings and its key."""
    base = f"{result['ways']}-way {result['shots']}-shot"
    columns: dict[tuple, str] = {}
    for r in result["rows"]:
        columns.setdefault((r["family"], r["setting"], r["strength"]), _column(r, base))
    entries = {(r["method"], r["family"], r["setting"], r["strength"]): r
               for r in result["rows"]}
    head = ["method", "learner", "train s", "eval s", *columns.values()]
    lines = [f"# Benchmark: {result['name']}", "",
             f"{result['dataset']} ({result['split'] or 'test split'}), {base}, "
             f"{result['queries']} queries per class, {result['episodes']} episodes per "
             f"cell, seed {result['seed']}; reference: {result['reference']}.", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---", "---:", "---:"] + ["---:"] * len(columns)) + "|"]
    for m in result["methods"]:
        found = [entries.get((m["name"], *k)) for k in columns]
        cells = ["-" if r is None else _entry(r, result["reference"]) for r in found]
        lines.append("| " + " | ".join([m["name"], m["learner"], _seconds(m["train_seconds"]),
                                        _seconds(m["eval_seconds"]), *cells]) + " |")
    lines += ["", "Accuracy in % ± 95% CI half-width over the episodes of a cell; under it, "
              "the paired difference from the reference method on the same episodes (points,"
              " ± 95% CI). Bold: the best method of a setting, when its paired lead over "
              "every other method is significant. train s, eval s: training and evaluation "
              "seconds."]
    lines += [f"Skipped: {s['method']} {s['family']}: {s['reason']}"
              for s in result.get("skipped", [])]
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    """One panel per threat family, one line per method."""
    per_method = [{"run": m["name"], "ways": result["ways"], "shots": result["shots"],
                   "episodes": result["episodes"],
                   "rows": [r for r in result["rows"] if r["method"] == m["name"]]}
                  for m in result["methods"]]
    plot_results(per_method, path)


def write_benchmark(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
    """Writes benchmark.json, .csv, .md and .png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"benchmark.{ext}" for ext in ("json", "csv", "md", "png")}
    files = {k: str(v) for k, v in paths.items()}
    _atomic_write(paths["json"], (json.dumps({**result, "files": files}, indent=1) + "\n"
                                  ).encode())
    _atomic_write(paths["csv"], _csv_bytes(result["rows"]))
    _atomic_write(paths["md"], format_markdown(result).encode())
    _plot(result, paths["png"])
    return files
