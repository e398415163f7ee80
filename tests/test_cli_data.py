"""`metarobust data prepare` (metarobust.cli.data): an IDX pair prepared into a dataset cache;
a missing --labels refused with exit status 2."""

from __future__ import annotations

import argparse
import gzip
import struct

import numpy as np
import pytest

from metarobust.cli.data import add_parser as add_data_parser
from metarobust.data.dataset import load


def test_prepare_idx_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 3, 3), dtype=np.uint8)
    (tmp_path / "img.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, 6, 3, 3) + pixels.tobytes())
    )
    (tmp_path / "lab").write_bytes(struct.pack(">II", 0x801, 6) + bytes([4, 9, 4, 9, 4, 1]))
    parser = argparse.ArgumentParser(prog="metarobust")
    add_data_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cache"
    args = parser.parse_args(
        [
            "data",
            "prepare",
            "idx",
            "--images",
            str(tmp_path / "img.gz"),
            "--labels",
            str(tmp_path / "lab"),
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert "6 images" in capsys.readouterr().out
    ds = load(out)
    np.testing.assert_array_equal(ds.images[:, 0], pixels)
    assert ds.class_names == ["1", "4", "9"] and ds.labels.tolist() == [1, 2, 1, 2, 1, 0]

    bad = parser.parse_args(["data", "prepare", "idx", "--images", "x", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        bad.func(bad)
    assert exc.value.code == 2
    assert "--labels" in capsys.readouterr().err
