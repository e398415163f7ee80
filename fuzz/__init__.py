"""metarobust's own fuzz harness: every entry point of ``metarobust._core`` and the public
Python API, called with valid, one-argument-broken and junk inputs in worker processes, each
case classified (returned, rejected, unclear, crash, hang, wrong) and every failing case
written as a standalone reproducer. Run it with ``python fuzz/run.py``."""
