"""The corruption vocabulary, from the Rust core: the names, what each corruption does and
what its severity means (:data:`CORRUPTION_INFO`), the inks and the sets a corruption
applies to, and the check of a corruption's arguments that the sampler and
:func:`metarobust.robust.corrupt` share.

>>> CORRUPTION_INFO["gaussian_blur"].parameter
'sigma (px)'
"""

from __future__ import annotations

import textwrap
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import _core
from ._checks import check_int

__all__ = [
    "CORRUPTIONS", "CORRUPTION_INFO", "CORRUPT_TARGETS", "INKS", "MAX_SEVERITY", "SEVERITIES",
    "CorruptionInfo", "check_corruption_args", "info_table",
]

#: Corruption names the sampler and ``metarobust.robust.corrupt`` accept, in the core's order.
CORRUPTIONS: tuple[str, ...] = tuple(_core.CORRUPTIONS)
CORRUPT_TARGETS = ("query", "support", "both")
INKS = ("dark", "light")
MAX_SEVERITY = 5
SEVERITIES = tuple(range(1, MAX_SEVERITY + 1))


class CorruptionInfo(NamedTuple):
    """What one corruption does: its ``family`` ("noise", "blur", "morphology", "elastic",
    "occlusion", "photometric" or "geometric"), the ``parameter`` its severity sets (with
    its unit), that parameter's ``values`` at severities 1 to 5 (lengths for 28x28 images)
    and a one-line ``description``."""

    family: str
    parameter: str
    values: tuple[float, ...]
    description: str


#: Name -> :class:`CorruptionInfo` of every corruption, in the order of :data:`CORRUPTIONS`,
#: from the Rust core (read-only).
CORRUPTION_INFO: Mapping[str, CorruptionInfo] = types.MappingProxyType({
    row["name"]: CorruptionInfo(row["family"], row["parameter"], tuple(row["values"]),
                                row["description"])
    for row in _core.corruption_info()
})


def info_table(info: Mapping[str, CorruptionInfo], width: int = 100) -> str:
    """``info`` as a reStructuredText table, the descriptions wrapped to fit ``width``."""
    head = ("name", "family", "severity 1, 2, 3, 4, 5", "what it does")
    rows = [(name, i.family, f"{i.parameter}: {', '.join(f'{v:g}' for v in i.values)}",
             i.description) for name, i in info.items()]
    sizes = [max(len(r[k]) for r in [head, *rows]) for k in range(3)]
    sizes.append(max(30, width - sum(sizes) - 2 * 3))
    rule = "  ".join("=" * n for n in sizes)
    lines = [rule, "  ".join(h.ljust(n) for h, n in zip(head, sizes)).rstrip(), rule]
    for row in rows:
        wrapped = textwrap.wrap(row[3], sizes[3]) or [""]
        cells = [*row[:3], wrapped[0]]
        lines.append("  ".join(c.ljust(n) for c, n in zip(cells, sizes)).rstrip())
        indent = " " * (sum(sizes[:3]) + 2 * 3)
        lines.extend(indent + more for more in wrapped[1:])
    lines.append(rule)
    return "\n".join(lines) + "\n"


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(map(repr, names))


def check_corruption_args(name: Any, severity: Any, ink: Any, arg: str = "corruption",
                          corrupt: Any = "query") -> tuple[str | None, int, str, str]:
    """``(name, severity, ink, corrupt)`` checked; ``arg`` is the name argument's name.
    ``name`` may be None (no corruption); the other values are checked all the same."""
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"{arg}: expected a str, got {name!r} ({type(name).__name__})")
        if name not in CORRUPTIONS:
            raise ValueError(f"{arg}: unknown corruption {name!r}; expected one of "
                             f"{_quoted(CORRUPTIONS)}")
    severity = check_int(severity, "severity", 1, MAX_SEVERITY)
    if not isinstance(ink, str) or ink not in INKS:
        raise ValueError(f"ink: expected {_quoted(INKS)}, got {ink!r}")
    if not isinstance(corrupt, str) or corrupt not in CORRUPT_TARGETS:
        raise ValueError(f"corrupt: expected {_quoted(CORRUPT_TARGETS)}, got {corrupt!r}")
    return name, severity, ink, corrupt


