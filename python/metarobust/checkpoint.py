"""Checkpoints: written to a temporary file and renamed; loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Saves ``state`` (tensors, state dicts and plain Python values) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a checkpoint written by :func:`save_checkpoint`; a missing, truncated or
    foreign file raises a clear error rather than returning partial state."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise ValueError(f"checkpoint: {path} is corrupt or not a metarobust checkpoint "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"checkpoint: {path} is not a metarobust checkpoint "
                         "(missing 'model' or 'step')")
    return state
