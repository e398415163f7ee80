"""The command line's entry point (metarobust.cli): its subcommands, version, and how errors
become exit statuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

import metarobust
from metarobust import cli


def test_every_subcommand_is_offered():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"quickstart", "train", "eval", "robustness", "data", "bench"}
    args = cli.build_parser().parse_args(["data", "prepare", "idx", "--out", "x"])
    handlers = {name: parser.get_default("func") for name, parser in sub.choices.items()}
    handlers["data"] = args.func
    assert all(callable(f) for f in handlers.values()), handlers
    assert len({f.__module__ for f in handlers.values()}) == len(handlers)  # one module each


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"metarobust {metarobust.__version__}"


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fly"])
    assert exc.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("error, status", [(ValueError("ways: must be >= 1"), 2),
                                           (TypeError("seed: expected an int"), 2),
                                           (FileNotFoundError("config: no file"), 2)])
def test_bad_input_exits_2_with_the_message(monkeypatch, capsys, error, status):
    from metarobust.cli import quickstart

    def fail(args):
        raise error

    monkeypatch.setattr(quickstart, "run", fail)
    assert cli.main(["quickstart"]) == status
    assert capsys.readouterr().err == f"metarobust: error: {error}\n"


def test_a_failed_distributed_run_exits_1(monkeypatch, capsys):
    from metarobust.cli import quickstart
    from metarobust.distributed import DistributedError

    def fail(args):
        raise DistributedError("rank 1 stopped answering")

    monkeypatch.setattr(quickstart, "run", fail)
    assert cli.main(["quickstart"]) == 1
    assert "rank 1 stopped answering" in capsys.readouterr().err


def test_the_module_runs_as_a_program():
    res = subprocess.run([sys.executable, "-m", "metarobust", "eval", "--help"],
                         capture_output=True, text=True, check=True)
    assert "usage: metarobust eval" in res.stdout and "--checkpoint" in res.stdout
