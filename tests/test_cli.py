"""The command line's entry point (metarobust.cli): its subcommands, version, how errors
become exit statuses, and the defaults every --help shows."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from fractions import Fraction

import pytest

import metarobust
from metarobust import cli


def test_every_subcommand_is_offered():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"quickstart", "train", "eval", "robustness", "data", "bench",
                                "benchmark", "certify"}
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


def _parsers(parser: argparse.ArgumentParser, name: str = "metarobust"):
    """Every parser of the command line, nested subcommands included."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _shown_default(parser: argparse.ArgumentParser, action: argparse.Action) -> str | None:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    found = re.search(r"\(default: ([^)]*)\)", text)
    return found and found.group(1)


def _equal(shown: str, value) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(Fraction(shown)) == value  # 8/255 reads better than its decimals
    return shown == str(value)


def test_every_option_with_a_default_shows_it_in_help():
    from metarobust.cli.train import FLAGS
    from metarobust.config import TrainConfig

    config_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for name, parser in _parsers(cli.build_parser()):
        parser.format_help()  # renders (a stray % in a help text raises)
        for action in parser._actions:
            if action.default is argparse.SUPPRESS or action.nargs == 0:
                continue  # --help, --version, flags
            default = action.default
            if name == "metarobust train" and action.dest in FLAGS:
                default = config_defaults[action.dest]  # None on the parser: --config wins
            if default is None or default == []:
                continue
            shown = _shown_default(parser, action)
            assert shown is not None, f"{name} {action.option_strings}: no default shown"
            assert _equal(shown, default), (name, action.dest, shown, default)
            checked += 1
    assert checked >= 40  # train alone has about 25


def test_options_without_a_default_say_what_happens_when_left_out():
    """Options whose default depends on the run, learner or dataset say so in words."""
    parser = dict(_parsers(cli.build_parser()))["metarobust train"]
    for dest in ("test_ways", "test_shots", "test_queries", "meta_batch", "lr", "schedule",
                 "model", "test_inner_steps", "split", "val_split", "threads", "chunk_size"):
        action = next(a for a in parser._actions if a.dest == dest)
        assert "default: " in action.help, dest
