"""Fixed-seed outputs against the values recorded in ``tests/golden/values.json`` (see
``tests/golden/record.py``): episodes, corruptions, label noise and augmentation bit for bit;
training loss curves and suite rows to float rounding (torch's CPU kernels round differently
on other instruction sets; a changed seed or stream moves them by far more)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("golden")
REL = 1e-4


def _recorder():
    spec = importlib.util.spec_from_file_location("golden_record", GOLDEN / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden():
    return json.loads((GOLDEN / "values.json").read_text())


@pytest.fixture(scope="module")
def recorder():
    return _recorder()


@pytest.mark.parametrize("part", ["episodes", "corruptions", "perturbations"])
def test_bit_identical(golden, recorder, part):
    now = getattr(recorder, part)()
    assert now == golden[part]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=REL)


def test_training_and_suite(golden, recorder, tmp_path):
    curves = recorder.training(tmp_path)
    assert set(curves) == set(golden["training"])
    for name, losses in curves.items():
        want = golden["training"][name]
        assert len(losses) == len(want) == recorder.TRAIN_STEPS, name
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(losses, want)) if not _close(a, b)]
        assert not bad, f"{name}: step, loss, recorded: {bad[:5]}"
    rows = recorder.suite(tmp_path)
    assert [(r["family"], r["setting"], r["strength"]) for r in rows] == \
        [(r["family"], r["setting"], r["strength"]) for r in golden["suite"]]
    for got, want in zip(rows, golden["suite"]):
        assert _close(got["accuracy"], want["accuracy"]), (got, want)
        assert _close(got["ci95"], want["ci95"]), (got, want)
