"""Process memory and page-fault probes shared by the sampler and MAML benchmarks.

Linux's ``/proc/self/status`` gives the current and peak resident set (``VmRSS``,
``VmHWM``), and ``/proc/self/clear_refs`` resets the peak. ``resource`` (POSIX only) gives
minor page faults and, without ``/proc``, the peak resident set; it is imported where it
is used, so that the timings work where the module is missing (the probes then answer NaN
or None). torch's CPU allocations are invisible to ``tracemalloc``, hence these probes.
"""

from __future__ import annotations

import math
import sys


def _minor_faults() -> float:
    """Minor page faults of this process so far (``getrusage`` ``ru_minflt``); NaN without
    the ``resource`` module."""
    try:
        import resource
    except ImportError:
        return math.nan
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), None where unreadable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> float:
    """Resident set size in bytes: ``VmRSS``; without ``/proc``, the peak resident set
    (``ru_maxrss``); NaN where neither can be read."""
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import resource
    except ImportError:
        return math.nan
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak resident set (VmHWM) to the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Returns freed heap memory to the OS (glibc only), so RSS starts from a clean heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
