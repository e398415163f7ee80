"""metarobust.bench.memory: the /proc and `resource` probes behind the memory figures."""

from __future__ import annotations

import math
import mmap
import os
import sys

import pytest

from metarobust.bench import memory

linux_proc = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="needs Linux /proc")
MIB = 1 << 20


def _touch(size: int) -> None:
    """Maps ``size`` fresh anonymous bytes, writes every page, unmaps them."""
    m = mmap.mmap(-1, size)
    for i in range(0, size, mmap.PAGESIZE):
        m[i] = 1
    m.close()


@linux_proc
def test_proc_status_reads_resident_set_in_kib():
    rss = memory._proc_status_kib("VmRSS")
    assert isinstance(rss, int) and rss > 1024  # a Python process with torch: > 1 MiB
    assert memory._proc_status_kib("NoSuchField") is None
    assert abs(memory._rss_bytes() - rss * 1024) < 64 * MIB


def test_minor_faults_count_first_touches():
    before = memory._minor_faults()
    _touch(8 * MIB)
    assert memory._minor_faults() > before


def test_probes_answer_nan_without_resource_or_proc(monkeypatch):
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now fails
    monkeypatch.setattr(memory, "_proc_status_kib", lambda field: None)
    assert math.isnan(memory._minor_faults())
    assert math.isnan(memory._rss_bytes())


def test_rss_falls_back_to_the_peak_without_proc(monkeypatch):
    pytest.importorskip("resource")
    monkeypatch.setattr(memory, "_proc_status_kib", lambda field: None)
    assert memory._rss_bytes() > MIB


@linux_proc
def test_peak_reset_then_peak_shows_memory_touched_and_freed():
    if not memory._reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    _touch(32 * MIB)  # resident while touched, gone after: only the peak keeps it
    hwm, rss = memory._proc_status_kib("VmHWM"), memory._proc_status_kib("VmRSS")
    assert hwm - rss >= 24 * 1024


def test_malloc_trim_is_harmless():
    memory._malloc_trim()
