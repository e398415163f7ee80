"""Case generation with hypothesis: for each target, valid drafts from its strategy, then
broken cases (one argument replaced by one of its breaks, or a relational break) and junk
cases (one argument replaced by an arbitrary object).

Cases are drawn by running a ``@given`` function under ``@seed``: hypothesis' public way to
draw reproducibly, so a run is a pure function of ``--seed``. Cases come in rounds: each
round draws a chunk of every target's cases (with a seed derived from the run's seed, the
target and the round), so the stream interleaves targets and its prefix does not depend on
how long the run lasts. Duplicates within a target are dropped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from .case import Break, Draft, Target, make_case

# Of every chunk of a target's cases: valid, broken and junk ones.
MIX = {"valid": 12, "broken": 20, "junk": 6}


def derived_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def collect(strategy: st.SearchStrategy, n: int, seed: int) -> list:
    """Up to ``n`` values of ``strategy``, the same for the same ``seed``."""
    out: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(strategy)
    def draw(value):
        out.append(value)

    draw()
    return out[:n]


def candidates(target: Target, draft: Draft, kind: str) -> list[Break]:
    """Every break of ``kind`` ("broken" or "junk") that applies to ``draft``."""
    out: list[Break] = []
    for name, spec in target.params.items():
        out += spec.breaks(draft, name) if kind == "broken" else spec.junk(name)
    if kind == "broken" and target.relational is not None:
        out += target.relational(draft)
    return out


@st.composite
def _with_variants(draw, target: Target) -> Draft:
    """A valid draft, some of its values replaced by valid variants."""
    draft = draw(target.valid)
    options = [(name, expr, label) for name, spec in target.params.items()
               if name in draft.args for expr, label in spec.variants(draft, name)]
    if options:
        chosen = draw(st.lists(st.sampled_from(options), max_size=2, unique_by=lambda o: o[0]))
        for name, expr, _ in chosen:
            draft.args[name] = expr
    return draft


@st.composite
def cases(draw, target: Target, kind: str) -> dict:
    """One case of ``kind`` for ``target``."""
    if kind == "valid":
        return make_case(target, kind, draw(_with_variants(target)))
    draft = draw(target.valid)
    options = candidates(target, draft, kind)
    if not options:
        return make_case(target, "valid", draft)
    return make_case(target, kind, draft, draw(st.sampled_from(options)))


def chunk(target: Target, seed: int, round_: int) -> list[dict]:
    """Round ``round_`` of ``target``'s cases, kinds interleaved."""
    parts = [collect(cases(target, kind), n, derived_seed(seed, target.name, round_, kind))
             for kind, n in MIX.items()]
    out = []
    for i in range(max(len(p) for p in parts)):
        out += [p[i] for p in parts if i < len(p)]
    return out


def stream(targets: list[Target], seed: int, max_dry: int = 3) -> Iterator[dict]:
    """Cases of every target, round by round, without repeats; a target that yields nothing
    new for ``max_dry`` rounds in a row (a small input space) drops out."""
    seen: dict[str, set[str]] = {t.name: set() for t in targets}
    dry = {t.name: 0 for t in targets}
    active = list(targets)
    round_ = 0
    while active:
        for target in list(active):
            fresh = 0
            for case in chunk(target, seed, round_):
                key = json.dumps([case[k] for k in ("kind", "arg", "how", "setup", "args")])
                if key in seen[target.name]:
                    continue
                seen[target.name].add(key)
                fresh += 1
                yield case
            dry[target.name] = 0 if fresh else dry[target.name] + 1
            if dry[target.name] >= max_dry:
                active.remove(target)
        round_ += 1
