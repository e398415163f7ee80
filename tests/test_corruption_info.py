"""metarobust.corruption_info: the corruption vocabulary from the Rust core, its table, and
the shared check of a corruption's arguments."""

from __future__ import annotations

import pytest

from metarobust import _core
from metarobust.corruption_info import (
    CORRUPT_TARGETS,
    CORRUPTION_INFO,
    CORRUPTIONS,
    INKS,
    CorruptionInfo,
    check_corruption_args,
    info_table,
)


def test_info_covers_every_corruption_in_order():
    assert tuple(CORRUPTION_INFO) == CORRUPTIONS
    assert [row["name"] for row in _core.corruption_info()] == list(CORRUPTIONS)
    for name, info in CORRUPTION_INFO.items():
        assert isinstance(info, CorruptionInfo), name
        assert len(info.values) == 5 and all(type(v) is float for v in info.values), name
        assert info.family and info.parameter and info.description, name
    with pytest.raises(TypeError):
        CORRUPTION_INFO["shear"] = CORRUPTION_INFO["rotate"]  # type: ignore[index]



def test_the_table_has_a_row_per_corruption_within_the_width():
    table = info_table(CORRUPTION_INFO, width=100)
    lines = table.splitlines()
    assert all(len(line) <= 100 for line in lines), max(map(len, lines))
    assert lines[0] == lines[2] == lines[-1] and set(lines[0]) == {"=", " "}
    for name, info in CORRUPTION_INFO.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert info.family in row and info.parameter in row
    # a description too long for its column wraps onto indented lines
    long = {"x": CorruptionInfo("noise", "std", (1.0,) * 5, "word " * 40)}
    wrapped = info_table(long, width=80).splitlines()
    assert len(wrapped) > 5 and all(len(line) <= 80 for line in wrapped)


def test_valid_arguments_come_back_checked():
    assert check_corruption_args("thin", 2, "light", corrupt="both") == ("thin", 2, "light",
                                                                        "both")
    assert check_corruption_args(None, 3, "dark") == (None, 3, "dark", "query")
    assert set(INKS) == {"dark", "light"} and set(CORRUPT_TARGETS) == {"query", "support",
                                                                       "both"}


@pytest.mark.parametrize("args, kw, error, words", [
    (("melt", 3, "dark"), {}, ValueError, "corruption: unknown corruption 'melt'"),
    ((7, 3, "dark"), {"arg": "name"}, TypeError, "name: expected a str, got 7"),
    (("thin", 6, "dark"), {}, ValueError, "severity: must be in [1, 5], got 6"),
    (("thin", True, "dark"), {}, TypeError, "severity: expected an int"),
    (("thin", 3, "grey"), {}, ValueError, "ink: expected 'dark', 'light', got 'grey'"),
    (("thin", 3, "dark"), {"corrupt": "all"}, ValueError, "corrupt: expected 'query'"),
])
def test_bad_arguments_are_named(args, kw, error, words):
    with pytest.raises(error) as exc:
        check_corruption_args(*args, **kw)
    assert words in str(exc.value)
