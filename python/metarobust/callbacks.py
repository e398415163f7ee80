"""Training callbacks: what the :class:`~metarobust.train.Trainer` does with its records.

A record is a flat dict of numbers with a ``"step"`` key: every ``log_every`` steps (and
after the first) a training record (``lr``, ``episodes_per_s`` and the step's statistics,
e.g. ``loss`` and ``accuracy``), and after every validation a validation record
(``val_accuracy`` or ``val_mse``, ``val_ci95``, and ``seconds``: the training time so far).
The trainer's own writers are callbacks too: :class:`MetricsWriter` (``metrics.jsonl``,
always) and :class:`TensorBoardWriter` (``tensorboard/``, with ``--tensorboard``). Callbacks
run in the main process only (rank 0 of a ``torchrun`` run), in the order given, after the
trainer's writers::

    from metarobust.callbacks import Callback
    from metarobust.train import Trainer

    class PrintLoss(Callback):
        def on_step(self, trainer, record):
            print(record["step"], record["loss"])

    Trainer(cfg, "runs/proto", callbacks=[PrintLoss()]).fit()

A callback must not draw random numbers from torch's global generator or change the
learner: a run's results are the same with or without callbacks.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any


class Callback:
    """Base class: override the events of interest (each does nothing by default)."""

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        """A training record (every ``log_every`` steps and after step 1)."""

    def on_validate(self, trainer: Any, record: dict[str, Any]) -> None:
        """A validation record."""

    def on_end(self, trainer: Any, result: dict[str, Any] | None) -> None:
        """The end of :meth:`Trainer.fit`: ``result`` is what ``fit`` returns (also at a
        ``stop_at`` step, and for a finished run run again, which trains nothing), or None
        when ``fit`` raises (Ctrl-C, an error)."""


class MetricsWriter(Callback):
    """Appends each record to a JSON-lines file as one JSON object."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write(record)

    def on_validate(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write(record)


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardWriter(Callback):
    """Writes each record's numbers as TensorBoard scalars (tag: the record's key, at its
    step) into ``log_dir``; needs the optional ``tensorboard`` package
    (``pip install 'metarobust[tensorboard]'``)."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        if not tensorboard_installed():
            raise ValueError("tensorboard: TensorBoard event files need the tensorboard "
                             "package, which is not installed (pip install "
                             "'metarobust[tensorboard]', or leave tensorboard off)")
        self.log_dir = Path(log_dir)
        self._writer: Any = None  # opened at the first record: no files before training

    def _write(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        step = int(record["step"])
        for key, value in record.items():
            if key != "step":
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write(record)

    def on_validate(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write(record)

    def on_end(self, trainer: Any, result: dict[str, Any] | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
