"""metarobust.checkpoint: saved and loaded back; truncated, foreign and missing checkpoints
refused with a clear error (load_run of a run with a corrupt best.pt too)."""

from __future__ import annotations

import pytest
import torch
from _runs import tiny

import metarobust as mr
from metarobust.checkpoint import load_checkpoint, save_checkpoint
from metarobust.train import Trainer


def test_corrupt_and_foreign_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    save_checkpoint({"model": {}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)
    save_checkpoint({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a metarobust checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    run = tmp_path / "run"
    Trainer(tiny(episodes=2), run, progress=False).fit()
    (run / "best.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        mr.load_run(run)
