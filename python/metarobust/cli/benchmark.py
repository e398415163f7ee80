"""``metarobust benchmark``: several methods on the same episodes under the same threats
(:mod:`metarobust.benchmark`), written as benchmark.json, .csv, .md and .png."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = """\
Run a benchmark spec (a TOML file): train the methods it names as training configs (under
one shared budget of steps or minutes) or reuse finished runs, evaluate every method on the
same test episodes under the same threat grid (same seeds: paired), and write
benchmark.json, .csv, .md (methods x settings: accuracy ± 95% CI, the paired difference
from the reference method with its CI, the best in bold when its lead is significant,
training and evaluation seconds) and .png (one panel per threat family, one line per
method) into --out. Rerunning resumes: finished trainings and cells are not recomputed.
The markdown table goes to stdout; the last stdout line is a JSON object with the paths.
Shipped specs: benchmarks/omniglot_5w1s.toml (every learner, a CPU budget) and
benchmarks/omniglot_5w1s_gpu.toml (published recipes)."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    b = sub.add_parser("benchmark", help="several methods on the same episodes and threats",
                       description=HELP)
    b.add_argument("spec", help="the benchmark spec, a TOML file")
    b.add_argument("--out", required=True, help="output directory (runs, cells, report)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=run)
    return b


def run(args: argparse.Namespace) -> int:
    from ..benchmark import format_markdown, load_spec, run_benchmark

    spec = load_spec(args.spec)
    result = run_benchmark(spec, args.out, progress=not args.no_progress)
    print(format_markdown(result), end="")
    print(json.dumps({"methods": len(result["methods"]), "rows": len(result["rows"]),
                      **result["files"]}))
    return 0
