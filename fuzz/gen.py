"""Case generation with hypothesis: for each target, valid drafts from its strategy, then
broken cases (one argument replaced by one of its breaks, or a relational break) and junk
cases (one argument replaced by an arbitrary object).

Cases are drawn by running a ``@given`` function under ``@seed``: hypothesis' public way to
draw reproducibly, so a run is a pure function of ``--seed``. Cases come in rounds: each
round draws a chunk of every target's cases (with a seed derived from the run's seed, the
target and the round) and interleaves them, so any prefix of the stream covers every
target and does not depend on how long the run lasts. Duplicates within a target are
dropped. Drawing runs in a process of its own, ahead of the workers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
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


def rounds(targets: list[Target], seed: int, max_dry: int = 3) -> Iterator[list[dict]]:
    """The cases of every target, round by round (targets interleaved case by case within a
    round, so any prefix covers them all), without repeats; a target that yields nothing
    new for ``max_dry`` rounds in a row (a small input space) drops out."""
    seen: dict[str, set[str]] = {t.name: set() for t in targets}
    dry = {t.name: 0 for t in targets}
    active = list(targets)
    round_ = 0
    while active:
        fresh: dict[str, list[dict]] = {}
        for target in active:
            fresh[target.name] = []
            for case in chunk(target, seed, round_):
                key = json.dumps([case[k] for k in ("kind", "arg", "how", "setup", "args")])
                if key not in seen[target.name]:
                    seen[target.name].add(key)
                    fresh[target.name].append(case)
            dry[target.name] = 0 if fresh[target.name] else dry[target.name] + 1
        lists = list(fresh.values())
        yield [c for i in range(max(map(len, lists))) for c in
               (lst[i] for lst in lists if i < len(lst))]
        active = [t for t in active if dry[t.name] < max_dry]
        round_ += 1


def _produce(modules: str | None, names: list[str], seed: int, out) -> None:
    """The generator process: rounds of cases into the queue ``out``, then None."""
    from .registry import load_targets

    by_name = {t.name: t for t in load_targets(modules)}
    for batch in rounds([by_name[n] for n in names], seed):
        out.put(batch)
    out.put(None)


def stream(modules: str | None, names: list[str], seed: int,
           ahead: int = 2) -> Iterator[dict]:
    """The cases of the targets ``names`` (from ``modules``), drawn in a process of their own
    up to ``ahead`` rounds ahead of the caller (drawing costs about as much as running)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=ahead)
    proc = ctx.Process(target=_produce, args=(modules, names, seed, queue), daemon=True)
    proc.start()
    try:
        while True:
            batch = queue.get()
            if batch is None:
                return
            yield from batch
    finally:
        proc.terminate()
        proc.join(timeout=5)
