"""Results of a run: the table (cases per target and outcome), the failure classes (failing
cases grouped by target, outcome, broken argument, kind of break and the gist of the error)
and the reproducers written for each class."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from .case import Target
from .classify import FAILING, OUTCOMES
from .repro import reproducer

REPROS_PER_CLASS = 2


def _gist(detail: str) -> str:
    """The first line of an error with numbers, paths and quoted values blurred, so that
    the same fault with other sizes groups together; for a result, what went wrong (a bad
    input accepted; which check failed), not the values."""
    lines = [ln for ln in detail.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if first.startswith("worker "):  # a crash: the signal and the telling stderr line
        tell = [ln for ln in lines[1:] if "panicked" in ln or "memory" in ln or "Fatal" in ln]
        first = first + (" | " + tell[0].strip() if tell else "")
    elif first.startswith("bad input accepted"):
        first = "bad input accepted"
    elif first.startswith("check raised"):
        first = "check raised " + lines[-1].split(":")[0]
    elif first.startswith("check: "):
        first = ":".join(first.split(":")[:2])
    first = re.sub(r"(/[\w.\-]+)+", "PATH", first)
    first = re.sub(r"0x[0-9a-fA-F]+", "N", first)
    first = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "N", first)
    first = re.sub(r"'[^']{0,40}'|\"[^\"]{0,40}\"", "'…'", first)
    return first[:110]


def _how(case: dict) -> str:
    how = case["how"]
    if how.startswith("junk "):
        return "junk"
    return re.sub(r"\s*(2\*\*\d+.*|-?\d.*|float\(.*)$", "", how) or how


def signature(case: dict, result: dict) -> tuple[str, ...]:
    return (case["target"], result["outcome"], case["kind"], case["arg"] or "-", _how(case),
            _gist(result.get("detail", "")))


class Results:
    """Outcome counts per target and the failing cases, in case order."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.failures: list[tuple[int, dict, dict]] = []

    def add(self, case_id: int, case: dict, result: dict) -> None:
        self.counts[case["target"]][result["outcome"]] += 1
        if result["outcome"] in FAILING:
            self.failures.append((case_id, case, result))

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def table(self) -> str:
        cols = [o for o in OUTCOMES if o != "error" or any(c["error"] for c in
                                                           self.counts.values())]
        width = max([len("target"), *map(len, self.counts)]) + 2
        head = "target".ljust(width) + "cases".rjust(8) + "".join(c.rjust(10) for c in cols)
        lines = [head, "-" * len(head)]
        total: Counter = Counter()
        for name in sorted(self.counts):
            c = self.counts[name]
            total.update(c)
            lines.append(name.ljust(width) + str(sum(c.values())).rjust(8)
                         + "".join(str(c[o]).rjust(10) for o in cols))
        lines.append("-" * len(head))
        lines.append("total".ljust(width) + str(sum(total.values())).rjust(8)
                     + "".join(str(total[o]).rjust(10) for o in cols))
        return "\n".join(lines)

    def classes(self) -> dict[tuple[str, ...], list[tuple[int, dict, dict]]]:
        groups: dict[tuple[str, ...], list] = defaultdict(list)
        for item in sorted(self.failures, key=lambda x: x[0]):
            groups[signature(item[1], item[2])].append(item)
        return dict(sorted(groups.items()))

    def write(self, out: Path, targets: dict[str, Target], seed: int) -> list[str]:
        """Writes table.txt, classes.txt, failures.jsonl and the reproducers under
        ``out``; returns the lines of classes.txt."""
        out.mkdir(parents=True, exist_ok=True)
        repro_dir = out / "failures"
        repro_dir.mkdir(exist_ok=True)
        for old in repro_dir.glob("*.py"):
            old.unlink()
        (out / "table.txt").write_text(self.table() + "\n")
        numbers: Counter = Counter()
        lines = []
        with open(out / "failures.jsonl", "w") as f:
            for sig, items in self.classes().items():
                files = []
                smallest = sorted(items, key=lambda x: len(json.dumps(x[1])))
                for case_id, case, result in smallest[:REPROS_PER_CLASS]:
                    numbers[case["target"]] += 1
                    path = repro_dir / f"{case['target']}-{numbers[case['target']]}.py"
                    path.write_text(reproducer(case, result, targets[case["target"]],
                                               case_id, seed))
                    files.append(str(path))
                for case_id, case, result in items:
                    f.write(json.dumps({"id": case_id, "signature": sig, "case": case,
                                        "result": result}) + "\n")
                lines.append(f"{len(items):6d}  " + " | ".join(sig) + f"\n        {files[0]}")
        (out / "classes.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        return lines
