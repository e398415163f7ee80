"""README.md: every code block runs as pasted. Python blocks run in order in one namespace;
`metarobust ...` lines of the bash blocks run through the command line's entry point; the
install lines are what .ci/run runs. Relative links point at files that exist."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from metarobust.cli import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Commands of the quick start: they install the package, so CI runs them itself (.ci/run)
INSTALL_LINES = ("pip install . && metarobust quickstart",
                 'pip install ".[test]" && python -m pytest tests -q')


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README.read_text()) if kind == lang]


def test_readme_is_short_and_has_the_two_quick_start_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    bash = "\n".join(blocks("bash"))
    for line in INSTALL_LINES:
        assert line in bash
    # CI runs the README's test command (and so proves it works on a bare machine)
    assert "$PY -m pytest tests -q" in (REPO / ".ci" / "run").read_text()


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")
    assert len(code) >= 2
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for body in code:
            exec(compile(body, str(README), "exec"), namespace)
    # the tour trains a learner: well above the 20% chance of 5-way episodes
    assert namespace["test_sampler"].ways == 5
    printed = out.getvalue()
    accuracy = float(re.search(r"'accuracy': ([0-9.]+)", printed).group(1))
    assert accuracy > 0.5, printed
    # the robustness table names every family of the grid it was given
    for family in ("clean", "label_noise_symmetric", "corruption:gaussian_blur", "fgsm"):
        assert family in printed


def command_lines() -> list[list[str]]:
    lines = []
    for body in blocks("bash"):
        for line in body.splitlines():
            if line.startswith("metarobust ") and line not in INSTALL_LINES:
                lines.append(shlex.split(line, comments=True)[1:])
    return lines


def test_readme_command_lines_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines = command_lines()
    assert [args[0] for args in lines] == ["train", "eval", "robustness"]
    for args in lines:
        assert main(args) == 0, args
        out = capsys.readouterr().out
        if args[0] == "eval":
            assert json.loads(out.strip().splitlines()[-1])["accuracy"] > 0.2
    for name in ("config.toml", "metrics.jsonl", "robustness.json", "robustness.png"):
        assert (tmp_path / "runs" / "glyphs" / name).is_file(), name


@pytest.mark.parametrize("target", sorted(set(
    re.findall(r"\]\(((?!https?:)[^)#]+)\)", README.read_text()))))
def test_readme_links_exist(target):
    assert (REPO / target).exists(), target
