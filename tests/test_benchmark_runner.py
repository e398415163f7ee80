"""metarobust.benchmark.runner and report on the embedded glyphs with tiny budgets: two
methods trained from configs, their identical episodes and perturbations, the paired
differences against NumPy, the files written and consistent, and a rerun that recomputes
nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from metarobust.benchmark import check_spec, read_csv, run_benchmark
from metarobust.benchmark import runner as runner_module
from metarobust.learners import MAML, ProtoNet

GRID = {"clean": [], "gaussian_noise": [0.3], "label_noise_symmetric": [0.5],
        "corruption:gaussian_blur": [3], "fgsm": [8 / 255]}


def spec_data(**methods_extra) -> dict:
    return {
        "name": "tiny", "reference": "proto", "seed": 11, "device": "cpu",
        "budget": {"steps": 3},
        "test": {"dataset": "glyphs", "image_size": 16, "ways": 3, "shots": 1, "queries": 2,
                 "episodes": 8},
        "threats": {"grid": GRID, "pgd_steps": 2, "label_noise_shots": [2]},
        "train": {"dataset": "glyphs", "model": "conv4_mini", "image_size": 16,
                  "glyph_classes": 30, "ways": 3, "shots": 1, "queries": 2,
                  "val_every": 10**6, "device": "cpu"},
        "methods": [{"name": "proto", "train": {"learner": "protonet"}},
                    {"train": {"learner": "fomaml", "meta_batch": 2}}],
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run_benchmark(check_spec(spec_data()), out, progress=False, log=lambda s: None)


def _cells(out: Path, method: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells" / method).glob("*@*.json"))]


def test_files_written_and_consistent(bench):
    out, res = bench
    assert res["files"] == {k: str(out / f"benchmark.{k}") for k in ("json", "csv", "md", "png")}
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["rows"] == res["rows"] == read_csv(out / "benchmark.csv")
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 5 families; label noise at 1 and 2 shots: 6 settings for each of the 2 methods
    assert len(res["rows"]) == 12
    assert [m["name"] for m in res["methods"]] == ["proto", "fomaml"]
    for m in res["methods"]:
        assert m["trained"] and m["steps"] == 3 and m["train_seconds"] > 0
        cells = _cells(out, m["name"])
        assert len(cells) == len(GRID)
        assert m["eval_seconds"] == pytest.approx(sum(c["seconds"] for c in cells), abs=0.01)
    md = (out / "benchmark.md").read_text()
    for m in res["methods"]:
        line = next(x for x in md.splitlines() if x.startswith(f"| {m['name']} |"))
        assert line.count("|") == 4 + 6 + 1  # method, learner, train s, eval s, 6 settings
        for r in (r for r in res["rows"] if r["method"] == m["name"]):
            assert f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}" in line
            if r["diff"] is not None:
                assert f"{100 * r['diff']:+.2f} ± {100 * r['diff_ci95']:.2f}" in line


def test_paired_differences_match_numpy(bench):
    out, res = bench
    per = {m: {(r["family"], r["setting"]): np.array(r["per_episode"])
               for c in _cells(out, m) for r in c["rows"]} for m in ("proto", "fomaml")}
    for row in res["rows"]:
        key = (row["family"], row["setting"])
        acc = per[row["method"]][key]
        assert len(acc) == row["episodes"] == 8
        assert row["accuracy"] == pytest.approx(acc.mean(), abs=1e-12)
        if row["method"] == "proto":
            assert row["diff"] is None
            continue
        d = acc - per["proto"][key]
        assert row["diff"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["diff_ci95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(d.size),
                                                 abs=1e-12)
    for key in per["proto"]:
        a, b = per["proto"][key], per["fomaml"][key]
        top, low = (a, b) if a.mean() >= b.mean() else (b, a)
        d = top - low
        lead = d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(d.size) > 0
        best = [r["method"] for r in res["rows"] if (r["family"], r["setting"]) == key
                and r["best"]]
        assert best == ([("proto" if top is a else "fomaml")] if lead else [])


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_every_method_sees_the_same_episodes_and_perturbations(bench, tmp_path, monkeypatch):
    """The learners' inputs in every cell but the (model-dependent) attacks are identical
    for both methods, bit for bit: same episodes, label noise, pixel noise, corruptions."""
    out, _ = bench
    seen: dict[str, list[str]] = {"ProtoNet": [], "MAML": []}
    for cls in (ProtoNet, MAML):
        original = cls.evaluate_batch

        def record(self, batch, ways, _original=original, _name=cls.__name__):
            seen[_name].append(_digest(batch.support_x, batch.support_y, batch.query_x,
                                       batch.query_y))
            return _original(self, batch, ways)
        monkeypatch.setattr(cls, "evaluate_batch", record)
    data = spec_data()
    data["threats"]["grid"] = {k: v for k, v in GRID.items() if k != "fgsm"}
    data["methods"] = [{"name": "proto", "run": str(out / "runs" / "proto")},
                       {"name": "fomaml", "run": str(out / "runs" / "fomaml")}]
    res = run_benchmark(check_spec(data), tmp_path, progress=False, log=lambda s: None)
    assert not any(m["trained"] for m in res["methods"])
    assert seen["ProtoNet"] and seen["ProtoNet"] == seen["MAML"]
    assert len(set(seen["ProtoNet"])) > 1  # the cells differ from each other


def test_rerun_recomputes_nothing(bench, monkeypatch):
    out, res = bench
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}

    def refuse(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(runner_module, "run_suite", refuse)
    monkeypatch.setattr(runner_module, "Trainer", refuse)
    again = run_benchmark(check_spec(spec_data()), out, progress=False, log=lambda s: None)
    assert again["rows"] == res["rows"] and again["methods"] == res["methods"]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")} == stamps


def test_changed_settings_or_a_damaged_cell_are_recomputed(bench, tmp_path):
    out, _ = bench
    spec = check_spec(spec_data())
    calls = []
    original = runner_module.run_suite

    def counting(*a, **k):
        calls.append(k["grid"])
        return original(*a, **k)
    mp = pytest.MonkeyPatch()
    mp.setattr(runner_module, "run_suite", counting)
    try:
        run_benchmark(dataclasses.replace(spec, episodes=4), out, progress=False,
                      log=lambda s: None)
        assert len(calls) == 2 * len(GRID)  # every cell of both methods, again
        calls.clear()
        # a stored cell damaged on disk is made again, alone
        cell = next((out / "cells" / "proto").glob("clean@*.json"))
        cell.write_text("{")
        res = run_benchmark(dataclasses.replace(spec, episodes=4), out, progress=False,
                            log=lambda s: None)
        assert calls == [{"clean": [0.0]}]
        assert all(r["episodes"] == 4 for r in res["rows"])
    finally:
        mp.undo()


def test_bad_runs_are_named(bench, tmp_path):
    out, _ = bench
    data = spec_data()
    data["methods"][1] = {"name": "gone", "run": str(tmp_path / "nothing")}
    with pytest.raises(FileNotFoundError, match="gone.*no config.toml"):
        run_benchmark(check_spec(data), tmp_path / "o", progress=False, log=lambda s: None)
    data = spec_data()
    data["test"]["image_size"] = 20
    data["methods"] = [{"name": "proto", "run": str(out / "runs" / "proto")}]
    with pytest.raises(ValueError, match="proto was trained on 16-pixel.*20 pixels"):
        run_benchmark(check_spec(data), tmp_path / "p", progress=False, log=lambda s: None)
