"""The fuzzed entry points, one module per group: each holds a ``TARGETS`` list."""
