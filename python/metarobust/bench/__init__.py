"""Side-by-side benchmarks of the Rust hot paths against NumPy / torch references, reported
as ratios measured in one process.

Submodules, by subject:

- :mod:`.timing`: interleaved timing (:func:`measure`, :func:`measure_steps`), the method
  every figure uses;
- :mod:`.sampler`: the episode sampler against a NumPy sampler, a per-item DataLoader and
  memcpy (:func:`bench_sampler`);
- :mod:`.kernels`: fused prototype distances against torch expressions
  (:func:`bench_kernels`);
- :mod:`.maml` and :mod:`.maml_reference`: MAML meta-training against a learn2learn-style
  reference (:func:`bench_maml`);
- :mod:`.corruptions`: corrupted against clean sampling (:func:`bench_corruptions`);
- :mod:`.memory`: the resident-memory and page-fault probes;
- :mod:`.report`: tables, machine description and :data:`TARGETS`;
- :mod:`.runner`: :func:`run`, all of it printed; :mod:`.command`: ``metarobust bench``.

>>> rows = bench_kernels(shapes=[(2, 5, 1, 10, 8)], repeats=1, min_time=0.001)  # doctest: +SKIP
>>> print_table(rows)  # doctest: +SKIP
"""

from __future__ import annotations

from ..corruption_info import CORRUPTIONS as CORRUPTIONS  # noqa: F401  (bench.CORRUPTIONS, benches/)
from .command import run_cli
from .corruptions import (
    CORRUPTION_SETTING,
    CORRUPTION_SEVERITY,
    bench_corruptions,
    corruption_candidates,
    corruption_summary,
)
from .kernels import (
    DEFAULT_KERNEL_SHAPES,
    KERNEL_CANDIDATES,
    MODES,
    SMALL_KERNEL_SHAPE,
    bench_kernels,
    default_kernel_candidates,
    kernel_candidates,
    kernel_flops,
    kernel_inputs,
    kernel_overhead_probe,
    kernel_summary,
)
from .maml import (
    DEFAULT_MAML_REPEATS,
    DEFAULT_MAML_TASKS,
    MAML_CANDIDATES,
    MAML_MODEL,
    MAML_SETTING,
    bench_maml,
    check_maml_agree,
    maml_auto_path,
    maml_batch,
    maml_candidates,
    maml_peak_memory,
    maml_summary,
)
from .maml_reference import MAML_INNER_LR, MAML_INNER_STEPS, MAML_ORDERS, ReferenceMAML
from .report import TARGETS, check_targets, machine_info, print_table
from .runner import WHATS, run
from .sampler import (
    DEFAULT_BATCH,
    DEFAULT_SAMPLER_SETTINGS,
    DTYPES,
    SAMPLER_CANDIDATES,
    NumpyEpisodeSampler,
    bench_sampler,
    omniglot_like,
    sampler_alloc_probe,
    sampler_candidates,
    sampler_memory,
    sampler_summary,
)
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS, measure, measure_steps
from .timing import _stats as _stats  # noqa: F401  (bench._stats, experiments/scripts/corruptions_vs_core.py)

__all__ = [
    # defaults the command line shows
    "WHATS", "DEFAULT_BATCH", "DEFAULT_MAML_TASKS", "DEFAULT_MAML_REPEATS",
    "CORRUPTION_SEVERITY", "DEFAULT_REPEATS", "DEFAULT_MIN_TIME",
    # settings and candidates
    "DEFAULT_SAMPLER_SETTINGS", "DEFAULT_KERNEL_SHAPES", "SMALL_KERNEL_SHAPE", "DTYPES",
    "KERNEL_CANDIDATES", "MAML_CANDIDATES", "MAML_ORDERS", "MAML_SETTING", "MAML_MODEL",
    "MAML_INNER_LR", "MAML_INNER_STEPS", "MODES", "SAMPLER_CANDIDATES", "CORRUPTION_SETTING",
    "TARGETS",
    # timing and reporting
    "measure", "measure_steps", "print_table", "machine_info", "check_targets",
    # sampler
    "NumpyEpisodeSampler", "omniglot_like", "sampler_candidates", "bench_sampler",
    "sampler_summary", "sampler_alloc_probe", "sampler_memory",
    # kernels
    "default_kernel_candidates", "kernel_candidates", "kernel_inputs", "kernel_flops",
    "bench_kernels", "kernel_summary", "kernel_overhead_probe",
    # MAML
    "ReferenceMAML", "maml_batch", "maml_candidates", "maml_auto_path", "check_maml_agree",
    "maml_peak_memory", "bench_maml", "maml_summary",
    # corruptions
    "corruption_candidates", "bench_corruptions", "corruption_summary",
    # orchestration and command line
    "run", "run_cli",
]
