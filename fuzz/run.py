"""Run the fuzz harness: ``python fuzz/run.py [--minutes M | --cases N] [--targets PATTERN]
[--seed S] [--workers W] [--out DIR]``.

Prints the table of cases per target and outcome and the failure classes, writes them with
the reproducers under ``--out``, and exits with status 1 if any case is unclear, crash,
hang, wrong or error (see fuzz/classify.py for the rules)."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.gen import stream  # noqa: E402
from fuzz.pool import Pool  # noqa: E402
from fuzz.registry import load_targets, select  # noqa: E402
from fuzz.report import Results  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--minutes", type=float, help="run for this long (default 2)")
    size.add_argument("--cases", type=int, help="run this many cases")
    p.add_argument("--targets", help="comma-separated name patterns (substring or glob)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per case (a hang)")
    p.add_argument("--memory-mb", type=int, default=4096,
                   help="address-space limit of each worker (0: none)")
    p.add_argument("--target-modules", help=argparse.SUPPRESS)  # the harness's own tests
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.target_modules:
        os.environ["FUZZ_TARGET_MODULES"] = args.target_modules
    all_targets = load_targets(args.target_modules)
    targets = select(all_targets, args.targets)
    if not targets:
        print(f"no target matches {args.targets!r}", file=sys.stderr)
        return 2
    minutes = args.minutes if args.minutes is not None or args.cases else 2.0
    start = time.monotonic()
    stop_at = start + 60 * minutes if minutes is not None and not args.cases else None
    drawn = stream(args.target_modules, [t.name for t in targets], args.seed)
    cases = itertools.islice(drawn, args.cases) if args.cases else drawn
    results = Results()
    last = [start]

    def on_result(case: dict, result: dict) -> None:
        results.add(case["_id"], case, result)
        if not args.quiet and time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            done = sum(sum(c.values()) for c in results.counts.values())
            print(f"  {done} cases, {len(results.failures)} failing, "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    def numbered():
        for i, c in enumerate(cases):
            c["_id"] = i
            yield c

    pool = Pool(args.workers, args.timeout, args.memory_mb, args.out / "logs",
                args.target_modules)
    try:
        pool.run(numbered(), on_result, stop_at)
    finally:
        pool.close()
        drawn.close()  # stops the drawing process
    lines = results.write(args.out, {t.name: t for t in all_targets}, args.seed)
    elapsed = time.monotonic() - start
    print(results.table())
    print(f"\n{len(lines)} failure classes ({len(results.failures)} failing cases) in "
          f"{elapsed:.0f} s, seed {args.seed}; reproducers in {args.out / 'failures'}")
    for line in lines:
        print(line)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
