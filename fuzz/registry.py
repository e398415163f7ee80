"""Where targets come from: modules holding a ``TARGETS`` list (by default every module of
:mod:`fuzz.targets`); ``FUZZ_TARGET_MODULES`` (comma-separated module names) names others,
e.g. the misbehaving targets the harness's own tests use."""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil

from .case import Target

DEFAULT = "fuzz.targets"


def load_targets(modules: str | None = None) -> list[Target]:
    """The targets of ``modules`` (comma-separated; default: all of fuzz.targets), in
    module order."""
    names = [m for m in (modules or DEFAULT).split(",") if m]
    out: list[Target] = []
    for name in names:
        mod = importlib.import_module(name)
        if hasattr(mod, "__path__"):  # a package: its modules, sorted
            subs = sorted(i.name for i in pkgutil.iter_modules(mod.__path__))
            for sub in subs:
                out += getattr(importlib.import_module(f"{name}.{sub}"), "TARGETS", [])
        else:
            out += getattr(mod, "TARGETS", [])
    seen = set()
    for t in out:
        if t.name in seen:
            raise ValueError(f"two targets named {t.name!r}")
        seen.add(t.name)
    return out


def select(targets: list[Target], patterns: str | None) -> list[Target]:
    """Targets whose name matches one of ``patterns`` (comma-separated; a pattern without
    a wildcard matches as a substring)."""
    if not patterns:
        return targets
    pats = [p if any(c in p for c in "*?[") else f"*{p}*" for p in patterns.split(",") if p]
    return [t for t in targets if any(fnmatch.fnmatchcase(t.name, p) for p in pats)]
