"""`metarobust benchmark` (metarobust.cli.benchmark) on two tiny glyph runs: the table on
stdout, the JSON line of paths, a bad spec refused with its key named (status 2)."""

from __future__ import annotations

import json

from metarobust.cli import main

SPEC = """\
reference = "a"
seed = 5
device = "cpu"
[test]
dataset = "glyphs"
image_size = 16
ways = 5
shots = 1
queries = 2
episodes = 4
[threats.grid]
clean = []
gaussian_noise = [0.3]
[[methods]]
name = "a"
run = "{a}"
[[methods]]
name = "b"
run = "{b}"
"""


def test_benchmark_command(runs, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(a=runs[0], b=runs[1]))
    assert main(["benchmark", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    paths = json.loads(lines[-1])
    assert paths["methods"] == 2 and paths["rows"] == 4
    for ext in ("json", "csv", "md", "png"):
        assert paths[ext] == str(tmp_path / "out" / f"benchmark.{ext}")
    table = "\n".join(lines[:-1]) + "\n"
    assert table == (tmp_path / "out" / "benchmark.md").read_text()
    assert any(x.startswith("| b | protonet |") for x in lines)


def test_bad_spec_is_named(runs, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(a=runs[0], b=runs[1]).replace("episodes = 4", "episodes = 0"))
    assert main(["benchmark", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "test.episodes in" in err and "got 0" in err
    assert main(["benchmark", str(tmp_path / "none.toml"), "--out", str(tmp_path)]) == 2
    assert "spec: no file" in capsys.readouterr().err
