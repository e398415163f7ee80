"""Autocast state, which is thread-local: worker threads re-enter the caller's, and the fused
CPU kernels (float32 only) step aside under it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_DEVICES = ("cpu", "cuda")


def autocast_dtype(device: str) -> torch.dtype | None:
    """The dtype autocast casts to on ``device`` ("cpu" or "cuda") in this thread, or None
    when it is off."""
    try:
        on, dtype = torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
    except TypeError:  # torch < 2.4: one function per device type
        if device == "cpu":
            on, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            on, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dtype if on else None


def current_autocast() -> dict[str, torch.dtype]:
    """This thread's autocast settings, for :func:`entered` in another thread."""
    return {d: t for d in _DEVICES if (t := autocast_dtype(d)) is not None}


@contextlib.contextmanager
def entered(state: dict[str, torch.dtype]) -> Iterator[None]:
    """Autocast as ``state`` (from :func:`current_autocast`) says, in this thread."""
    with contextlib.ExitStack() as stack:
        for device, dtype in state.items():
            stack.enter_context(torch.autocast(device, dtype=dtype))
        yield
