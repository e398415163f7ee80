"""The fuzz harness (fuzz/) classifies cases as it says: a worker that aborts is a crash
with a reproducer that aborts too, a sleeping case a hang, a ValueError naming the broken
argument a rejection, a RuntimeError unclear, a wrong result wrong. Runs the misbehaving
targets of fuzz/selftest.py through fuzz/run.py in worker processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fuzz.classify import exception_outcome, names_argument, return_outcome  # noqa: E402


def _run(tmp_path: Path, targets: str, cases: int, timeout: float = 20) -> tuple[int, dict]:
    out = tmp_path / targets.replace("*", "_")
    cmd = [sys.executable, str(REPO / "fuzz" / "run.py"), "--cases", str(cases), "--targets",
           targets, "--target-modules", "fuzz.selftest", "--workers", "2", "--out", str(out),
           "--timeout", str(timeout), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    outcomes: dict[str, Counter] = {}
    failures = out / "failures.jsonl"
    for line in failures.read_text().splitlines() if failures.exists() else []:
        r = json.loads(line)
        outcomes.setdefault(r["case"]["target"], Counter())[r["result"]["outcome"]] += 1
        kinds = outcomes.setdefault(r["case"]["target"] + ":" + r["case"]["kind"], Counter())
        kinds[r["result"]["outcome"]] += 1
    return res.returncode, {"outcomes": outcomes, "stdout": res.stdout, "out": out}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run over the well-behaved and the failing selftest targets (not the slow ones)."""
    return _run(tmp_path_factory.mktemp("fuzz"), "selftest.named,selftest.runtime,"
                "selftest.wrong", 45)


def test_a_named_rejection_passes_and_the_run_fails_only_for_the_others(run):
    code, r = run
    assert code == 1
    assert "selftest.named" not in r["outcomes"], r["outcomes"]
    row = next(ln for ln in r["stdout"].splitlines() if ln.startswith("selftest.named"))
    cases, returned, rejected, *rest = map(int, row.split()[1:])
    assert cases == 15 and returned > 0 and rejected > 0 and sum(rest) == 0, row


def test_a_runtime_error_is_unclear(run):
    _, r = run
    assert set(r["outcomes"]["selftest.runtime"]) == {"unclear"}


def test_a_wrong_result_is_wrong(run):
    _, r = run
    assert set(r["outcomes"]["selftest.wrong:valid"]) == {"wrong"}
    # bad input: x + 1 accepted (wrong) or failing with an unnamed TypeError (unclear)
    assert set(r["outcomes"]["selftest.wrong:broken"]) <= {"wrong", "unclear"}


def test_an_aborting_worker_is_a_crash_with_a_reproducer(tmp_path):
    code, r = _run(tmp_path, "selftest.abort", 2)
    assert code == 1 and r["outcomes"]["selftest.abort"] == Counter(crash=2)
    repros = sorted((r["out"] / "failures").glob("selftest.abort-*.py"))
    assert repros, "no reproducer written"
    text = repros[0].read_text()
    assert "# outcome: crash" in text and "SIGABRT" in text
    # run as a user would: metarobust from wherever this interpreter finds it
    res = subprocess.run([sys.executable, str(repros[0])], capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGABRT


def test_a_sleeping_case_is_a_hang(tmp_path):
    code, r = _run(tmp_path, "selftest.sleep", 1, timeout=3)
    assert code == 1 and r["outcomes"]["selftest.sleep"] == Counter(hang=1)


def test_names_are_whole_words_near_the_start():
    assert names_argument("x: bad", ["x"])
    assert not names_argument("expected an int", ["x"])  # inside a word
    assert not names_argument("y" * 70 + " ways: bad", ["ways"])  # past the head
    assert names_argument("argument 'ways': too big", ["ways"])
    assert names_argument("cannot read /tmp/a/images.npy: truncated", ["*images.npy"])
    assert names_argument("cache " + "/d" * 40 + " missing", ["=value"], "/d" * 40)


def test_classification_rules():
    broken = {"kind": "broken", "names": ["x"], "tolerated": False}
    valid = {"kind": "valid", "names": [], "tolerated": False}
    assert exception_outcome(broken, ValueError("x: bad"), (), None)[0] == "rejected"
    assert exception_outcome(broken, ValueError("bad"), (), None)[0] == "unclear"
    assert exception_outcome(broken, MemoryError("x"), (), None)[0] == "unclear"
    assert exception_outcome(broken, FileNotFoundError("x: gone"), ("FileNotFoundError",),
                             None)[0] == "rejected"
    assert exception_outcome(broken, KeyboardInterrupt(), (), None)[0] == "crash"
    assert exception_outcome(valid, ValueError("x: bad"), (), None)[0] == "wrong"
    assert exception_outcome(valid, IndexError("x"), (), None)[0] == "unclear"
    assert return_outcome(broken, None)[0] == "wrong"
    assert return_outcome({**broken, "tolerated": True}, None)[0] == "returned"
    assert return_outcome(valid, "check: differs")[0] == "wrong"
