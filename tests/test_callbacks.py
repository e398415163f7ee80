"""Training callbacks (metarobust.callbacks): a user callback sees the records of
metrics.jsonl and the run's result, log_every spaces the training records without changing
the training, TensorBoard event files hold the same scalars as metrics.jsonl, and
tensorboard asked for without the package is a named error."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from _runs import tiny

from metarobust.callbacks import Callback
from metarobust.train import Trainer


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict | None]] = []

    def on_step(self, trainer, record):
        self.events.append(("step", dict(record)))

    def on_validate(self, trainer, record):
        self.events.append(("validate", dict(record)))

    def on_end(self, trainer, result):
        self.events.append(("end", result))


def _lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_callback_sees_the_metrics_records_and_the_result(tmp_path):
    recorder = Recorder()
    trainer = Trainer(tiny(episodes=7, log_every=3, val_every=4), tmp_path / "run",
                      progress=False, callbacks=[recorder])
    result = trainer.fit()
    records = [r for kind, r in recorder.events if kind != "end"]
    assert records == _lines(tmp_path / "run")
    kinds = [(kind, r["step"]) for kind, r in recorder.events if kind != "end"]
    # steps 1, 3, 6 (log_every 3 and the first); validations at 4 and at the end (7)
    assert kinds == [("step", 1), ("step", 3), ("validate", 4), ("step", 6), ("validate", 7)]
    assert recorder.events[-1] == ("end", result)
    # run again, the finished run trains nothing and logs nothing: only on_end
    again = Recorder()
    Trainer(tiny(episodes=7, log_every=3, val_every=4), tmp_path / "run", progress=False,
            callbacks=[again]).fit()
    assert again.events == [("end", {k: v for k, v in result.items()
                                     if k not in ("loss", "accuracy")})]


def test_log_every_does_not_change_the_training(tmp_path):
    a = Trainer(tiny(episodes=6, log_every=1), tmp_path / "a", progress=False)
    a.fit()
    b = Trainer(tiny(episodes=6, log_every=50), tmp_path / "b", progress=False,
                callbacks=[Recorder()])
    b.fit()
    for x, y in zip(a.learner.state_dict().values(), b.learner.state_dict().values()):
        assert torch.equal(x, y)
    assert [r["step"] for r in _lines(tmp_path / "a") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in _lines(tmp_path / "b") if "loss" in r] == [1]


def test_on_end_gets_none_when_the_run_is_interrupted(tmp_path, monkeypatch):
    recorder = Recorder()
    trainer = Trainer(tiny(episodes=6), tmp_path / "run", progress=False,
                      callbacks=[recorder])
    monkeypatch.setattr(trainer.learner, "meta_backward",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert recorder.events == [("end", None)]


def _needs_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        if os.environ.get("CI"):
            pytest.fail("tensorboard is not installed (CI installs metarobust[tensorboard])")
        pytest.skip("tensorboard is not installed (pip install 'metarobust[tensorboard]')")


def test_tensorboard_holds_the_scalars_of_metrics_jsonl(tmp_path):
    _needs_tensorboard()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    Trainer(tiny(episodes=5, log_every=2, tensorboard=True), run, progress=False).fit(stop_at=3)
    Trainer(tiny(episodes=5, log_every=2, tensorboard=True), run, progress=False).fit()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    got = {(tag, e.step): e.value for tag in events.Tags()["scalars"]
           for e in events.Scalars(tag)}
    want = {(key, r["step"]): value for r in _lines(run) for key, value in r.items()
            if key != "step"}
    assert set(got) == set(want)
    for key, value in want.items():  # event files hold float32
        assert got[key] == pytest.approx(value, rel=1e-6), key
    assert {tag for tag, _ in got} >= {"loss", "accuracy", "lr", "val_accuracy", "seconds"}


def test_tensorboard_asked_for_without_the_package(tmp_path, monkeypatch):
    from metarobust import callbacks

    monkeypatch.setattr(callbacks, "tensorboard_installed", lambda: False)
    with pytest.raises(ValueError, match=r"tensorboard: .* not installed \(pip install "
                                         r"'metarobust\[tensorboard\]'"):
        Trainer(tiny(tensorboard=True), tmp_path / "run", progress=False)


def test_callbacks_must_be_callbacks(tmp_path):
    with pytest.raises(TypeError, match=r"callbacks: expected metarobust.callbacks.Callback "
                                        r"instances, got 'log' \(str\)"):
        Trainer(tiny(), tmp_path / "run", progress=False, callbacks=["log"])
