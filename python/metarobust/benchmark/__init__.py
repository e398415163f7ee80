"""Benchmarks: several methods (runs to reuse or training configs to run first) evaluated on
the same test episodes under the same threats, with paired comparisons against a reference
method (``metarobust benchmark SPEC.toml --out DIR``).

>>> from metarobust.benchmark import load_spec, run_benchmark
>>> spec = load_spec("benchmarks/omniglot_5w1s.toml")  # doctest: +SKIP
>>> result = run_benchmark(spec, "bench-out")  # doctest: +SKIP
"""

from __future__ import annotations

from .paired import paired_difference, paired_rows, significant_best
from .report import format_markdown, read_csv, write_benchmark
from .runner import cell_name, load_test_set, run_benchmark
from .spec import Method, Spec, check_spec, load_spec

__all__ = [
    "Method", "Spec", "cell_name", "check_spec", "format_markdown", "load_spec",
    "load_test_set", "paired_difference", "paired_rows", "read_csv", "run_benchmark",
    "significant_best", "write_benchmark",
]
