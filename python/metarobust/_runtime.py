"""Process-wide settings the command line applies before heavy work.

glibc returns large freed blocks to the OS at once (``mmap`` above a threshold, heap trim
above another), so a training or evaluation loop whose activations are tens of megabytes
page-faults its whole working set back in on every step: on a 2-core machine that was a
third of an evaluation's time, all of it in the kernel, and 15-25% of a Conv-4 ProtoNet
training step. :func:`retain_freed_memory` raises both thresholds so freed blocks are
reused; the process keeps its peak memory instead of shrinking back.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30  # blocks up to 1 GiB come from the reusable heap


def retain_freed_memory() -> bool:
    """Tunes glibc's malloc to keep freed memory for reuse; True if it applied (glibc only;
    ``METAROBUST_MALLOC=default`` in the environment turns it off)."""
    if os.environ.get("METAROBUST_MALLOC", "") == "default":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
