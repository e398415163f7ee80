"""`metarobust bench`'s command line: bad arguments are named, with exit status 2."""

from __future__ import annotations

import pytest

from metarobust.cli import main


@pytest.mark.parametrize("argv, words", [
    (["kernels", "--ways", "0"], "ways: must be >= 1, got 0"),
    (["sampler", "--queries", "-1"], "queries: must be >= 0, got -1"),
    (["kernels", "--min-time", "nan"], "min_time: must be finite and > 0"),
    (["kernels", "--min-time", "-1"], "min_time: must be finite and > 0"),
    (["corruptions", "--severity", "9"], "severity: must be in 1..5, got 9"),
    (["maml", "--device", "tpu"], "device: "),
])
def test_bad_arguments_are_named(argv, words, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metarobust: error: ") and words in err, err
