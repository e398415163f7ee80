"""metarobust.bench.command: ``run_cli`` runs the benchmarks; the ``bench`` parser of
metarobust.cli.bench shows the package's defaults (bad arguments: test_cli_bench.py)."""

from __future__ import annotations

import argparse

import pytest
import torch

from metarobust import bench
from metarobust.bench import command
from metarobust.cli import bench as cli_bench
from metarobust.cli import build_parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarobust")
    cli_bench.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_defaults_are_the_package_constants():
    # the command line keeps its own copy (it must not import the benchmark package)
    for name in ("WHATS", "DEFAULT_BATCH", "DEFAULT_MAML_TASKS", "DEFAULT_MAML_REPEATS",
                 "DEFAULT_REPEATS", "DEFAULT_MIN_TIME", "CORRUPTION_SEVERITY"):
        assert getattr(cli_bench, name) == getattr(bench, name), name
    args = _parser().parse_args(["bench"])
    assert args.what == "all" and args.func is cli_bench.run
    assert args.min_time == bench.DEFAULT_MIN_TIME
    assert args.severity == bench.CORRUPTION_SEVERITY
    assert args.repeats is args.batch is args.tasks is None  # each subject's own default
    # the help of the real command line (its formatter appends the defaults not in the text)
    help_text = next(action for action in build_parser()._subparsers._group_actions
                     ).choices["bench"].format_help()
    for words in (f"(default: {bench.DEFAULT_BATCH})", f"(default: {bench.DEFAULT_MAML_TASKS})",
                  f"(default: {bench.DEFAULT_REPEATS}; maml {bench.DEFAULT_MAML_REPEATS})",
                  f"(default: {bench.CORRUPTION_SEVERITY})",
                  f"(default: {bench.DEFAULT_MIN_TIME})", "{" + ",".join(bench.WHATS) + "}"):
        assert words in " ".join(help_text.split()), words


def test_run_cli_prints_the_machine_then_the_tables(capsys):
    args = _parser().parse_args(["bench", "kernels", "--tasks", "1", "--ways", "2", "--shots",
                                 "1", "--queries", "1", "--dim", "4", "--repeats", "1",
                                 "--min-time", "0.0001", "--no-diagnostics"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("cpu: ") and "rayon threads: " in out
    assert "Kernel ratios" in out and "(1,2,1,2,4)" in out and "Diagnostic" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_refused_before_any_work():
    with pytest.raises(ValueError, match="device: CUDA is not available"):
        command._check_device("cuda")
    command._check_device("cpu")
