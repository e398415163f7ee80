"""Shared fixtures. Real data comes from METAROBUST_DATA (CI sets it to ../shared/data);
a test that needs it fails in CI when it is missing and skips elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _runs import train_glyph_run


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("METAROBUST_DATA")
    if not root or not Path(root).is_dir():
        msg = f"METAROBUST_DATA is not set to a data folder (got {root!r})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return Path(root)


@pytest.fixture(scope="session")
def omniglot_npz(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Omniglot background set straight from the npz arrays, at 105x105, ink dark (0)."""
    with np.load(data_root / "omniglot-npz" / "images_background.npz") as z:
        white = z["images"]  # True = white background
    n_chars, per, h, w = white.shape
    images = np.ascontiguousarray((white.reshape(n_chars * per, 1, h, w) * 255).astype(np.uint8))
    labels = np.repeat(np.arange(n_chars, dtype=np.int64), per)
    return images, labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny glyph ProtoNet runs (seeds 0 and 1), fresh for each test module: the
    robustness command writes its report into a run directory unless told otherwise."""
    base = tmp_path_factory.mktemp("runs")
    return train_glyph_run(base / "run_a", 0), train_glyph_run(base / "run_b", 1)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
