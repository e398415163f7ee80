"""`metarobust quickstart` (metarobust.cli.quickstart): its counts must be positive, named with
exit status 2."""

from __future__ import annotations

import pytest

from metarobust.cli import main


@pytest.mark.parametrize("flag", ["--ways", "--shots", "--episodes", "--classes",
                                  "--train-classes", "--proto-episodes", "--maml-episodes"])
def test_quickstart_counts_must_be_positive(flag, capsys):
    assert main(["quickstart", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"metarobust: error: {flag[2:].replace('-', '_')}: must be >= 1, got 0" in err
