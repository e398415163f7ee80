"""No call in the Rust sources that panics on bad input, but those listed with a reason.

A panic that reaches Python is pyo3's PanicException, a BaseException that `except
Exception` lets through; the rule (docs/design.md) is a ValueError or TypeError naming the
argument. The binding (rust/python/src) allocates and borrows only through calls that
return errors: rust-numpy's `readonly()`/`readwrite()` panic on a read-only or aliased
array, its constructors (`PyArray::zeros`, `PyArray::new`, ...) on a failed allocation, and
`vec![..; n]`, `Vec::with_capacity` and `to_vec` abort or panic on a huge size. The core
(rust/core/src) is scanned for `unwrap`, `expect` and the panicking macros outside its
tests: its kernels' own scratch buffers are sized by inputs their entry points have checked
(the binding and `metarobust_core::memory` check sizes before anything is allocated), so
they are not scanned. Indexing that could go out of bounds is left to the kernels' checks
and to the fuzzing in tests/test_core_errors.py.

Every entry point of the binding must also run its body through `guard("<its Python
name>", ...)`, which turns any panic left into a RuntimeError naming the function. Reads
the sources with regular expressions (comments and strings blanked); no build needed.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from test_layout_rust import BINDING, CORE, ROOT, code_of, matching_brace

BINDING_CALLS = re.compile(
    r"\.readonly\(\)|\.readwrite\(\)|::zeros\(|\bPyArray\w*::(?:new|from_\w+|arange\w*)\("
    r"|\bvec!\[|(?<!\w)with_capacity\(|\.to_vec\(\)|\.unwrap\(\)|\.expect\("
    r"|\b(?:panic|unreachable|todo|unimplemented|assert|assert_eq|assert_ne)!"
)
CORE_CALLS = re.compile(
    r"\.unwrap\(\)|\.expect\(|\b(?:panic|unreachable|todo|unimplemented)!|\bpanic_any\("
    r"|(?<!const _: \(\) = )\bassert(?:_eq|_ne)?!"
)

# "path relative to the repository :: call" -> (how many, why it may stay).
ALLOWED: dict[str, tuple[int, str]] = {
    "rust/python/src/lib.rs :: panic!": (
        2, "_panic_for_tests panics on purpose (with and without the GIL), for the test that "
           "a panic reaches Python as a RuntimeError naming the function"),
    "rust/core/src/corruptions/apply.rs :: unreachable!": (
        2, "a variant is drawn only for a corruption with finitely many results, and "
           "Corruption::new makes a plan for every kind: invariants of the module, not input"),
    "rust/core/src/corruptions/elastic.rs :: assert!": (
        2, "the bounds of the AVX2 gathers, checked once before the unsafe loads; the plan's "
           "sizes make them hold"),
    "rust/core/src/corruptions/geometric.rs :: assert!": (
        1, "the transpose's bounds, checked once outside its hot loop"),
    "rust/core/src/corruptions/mod.rs :: .expect(": (
        1, "every Kind is listed in KINDS (a constant table)"),
    "rust/core/src/corruptions/noise.rs :: .expect(": (
        1, "the minimum over a constant, non-empty range of candidates"),
    "rust/core/src/corruptions/noise.rs :: assert_eq!": (
        2, "one image in, one out: the callers pass equal lengths; checked once before the "
           "per-pixel loop"),
    "rust/core/src/distances/mod.rs :: assert!": (
        1, "the GEMM output's extent, checked before the unsafe matrixmultiply call"),
    "rust/core/src/distances/mod.rs :: .expect(": (
        1, "a slice of exactly TILE values into an array of TILE: lengths fixed by the code"),
    "rust/core/src/memory.rs :: panic_any(": (
        1, "grow_scratch unwinds with a ScratchRefused payload where the allocator refuses a "
           "kernel's scratch buffer (Vec::resize would abort the process); the binding's "
           "guard turns it into a MemoryError naming the images"),
    "rust/core/src/pool.rs :: .expect(": (
        1, "the operating system refusing the pool's threads is no argument error; the "
           "binding's guard reports it as a RuntimeError"),
    "rust/core/src/sampler/fill.rs :: .expect(": (
        1, "cached items have a cache row: set in the same pass that reads them"),
    "rust/core/src/sampler/mod.rs :: .expect(": (
        2, "the eligible classes are drawn from the present ones, and there is at least one "
           "(ways >= 1 is checked first)"),
}

TEST_FILES = ("tests.rs", "test_util.rs", "timing.rs")


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def without_tests(code: str) -> str:
    """`code` with its `#[cfg(test)] mod ... { }` blocks blanked."""
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
        end = matching_brace(code, m.end() - 1)
        code = code[: m.start()] + _blank(code[m.start(): end + 1]) + code[end + 1:]
    return code


def calls_in(path: Path, pattern: re.Pattern, key: str) -> Counter:
    """`"key :: call"` -> count, over the non-test code of the file `path`."""
    return Counter(f"{key} :: {m.group(0)}"
                   for m in pattern.finditer(without_tests(code_of(path))))


def calls(src: Path, pattern: re.Pattern) -> Counter:
    """`"path :: call"` -> count, over the non-test code of the crate sources `src`."""
    found: Counter = Counter()
    for path in sorted(src.rglob("*.rs")):
        if path.name not in TEST_FILES:
            found += calls_in(path, pattern, path.relative_to(ROOT).as_posix())
    return found


def _unlisted(found: Counter) -> dict[str, int]:
    return {k: n for k, n in found.items() if ALLOWED.get(k, (0, ""))[0] < n}


def test_the_binding_has_no_panicking_call_but_those_listed():
    unlisted = _unlisted(calls(BINDING, BINDING_CALLS))
    assert not unlisted, (
        f"panicking calls in the binding (use arrays::read/write/new_array, "
        f"memory::try_vec, or list them in ALLOWED with a reason): {unlisted}")


def test_the_core_has_no_panicking_call_but_those_listed():
    unlisted = _unlisted(calls(CORE, CORE_CALLS))
    assert not unlisted, f"panicking calls in the core, not in ALLOWED: {unlisted}"


def test_the_allow_list_is_current():
    found = calls(BINDING, BINDING_CALLS) + calls(CORE, CORE_CALLS)
    stale = {k: (n, found.get(k, 0)) for k, (n, _) in ALLOWED.items() if found.get(k, 0) != n}
    assert not stale, f"ALLOWED counts (listed, found) no longer match the sources: {stale}"


def test_the_scan_finds_what_it_looks_for(tmp_path):
    src = tmp_path / "x.rs"
    src.write_text(
        'fn f(a: &A) { let r = a.readonly(); let v = vec![0; 3]; // a.readwrite()\n'
        '    let s = "x.unwrap()"; let w = try_vec_with_capacity(3); b.unwrap(); }\n'
        "#[cfg(test)]\nmod tests { fn g() { x.unwrap(); } }\n")
    found = {k.split(" :: ")[1]: n for k, n in calls_in(src, BINDING_CALLS, "x").items()}
    assert found == {".readonly()": 1, "vec![": 1, ".unwrap()": 1}


# ---------------------------------------------------------------- every entry point guarded

def entry_points() -> list[tuple[str, str, str]]:
    """`(file, Python name, body)` of every #[pyfunction] and every fn of a #[pymethods]
    block (named `Class.method`, the constructor `Class.__new__`). Bodies are raw text (the
    guard's name is a string); they are found in the text with comments and strings blanked,
    which keeps every offset."""
    out = []
    for path in sorted(BINDING.glob("*.rs")):
        code, raw = code_of(path), path.read_text()
        for m in re.finditer(r"#\[pyfunction\][^{;]*?\bfn\s+(\w+)", code, re.S):
            out.append((path.name, m.group(1), _body(code, raw, m.end())))
        for m in re.finditer(r"#\[pymethods\]\s*impl\s+(\w+)\s*\{", code):
            block_end = matching_brace(code, m.end() - 1)
            for f in re.finditer(r"((?:#\[[^\]]*\]\s*)*)fn\s+(\w+)", code[:block_end], re.S):
                if f.start() < m.end():
                    continue
                name = "__new__" if "#[new]" in f.group(1) else f.group(2)
                out.append((path.name, f"{m.group(1)}.{name}", _body(code, raw, f.end())))
    return out


def _body(code: str, raw: str, at: int) -> str:
    start = code.index("{", at)
    return raw[start: matching_brace(code, start) + 1]


def test_every_entry_point_runs_under_a_guard_naming_it():
    points = entry_points()
    names = {name for _, name, _ in points}
    assert {"prototypes", "SamplerCore.fill", "SamplerCore.__new__", "_panic_for_tests"} <= names
    unguarded = [f"{file}: {name}" for file, name, body in points
                 if f'guard("{name}"' not in body]
    assert not unguarded, f"entry points without guard(\"<their name>\", ...): {unguarded}"
