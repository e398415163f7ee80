"""`metarobust eval` (metarobust.cli.eval) on runs trained just before: the JSON it prints,
bad and misplaced flags refused, a run holding only last.pt, sinusoid runs (MSE by inner
steps).

Both tests train first (the first one through `metarobust train`, whose bad --learner it
checks as well); their assertions are mostly about eval, so they live here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metarobust.config import TrainConfig
from metarobust.train import Trainer


def test_cli_train_then_eval_prints_json(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "metarobust"]
    train = subprocess.run(cmd + ["train", "--learner", "protonet", "--dataset", "glyphs",
                                  "--glyph-classes", "30", "--ways", "5", "--shots", "1",
                                  "--queries", "3", "--episodes", "4", "--device", "cpu",
                                  "--out", str(run)], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--ways", "5", "--shots", "1", "--episodes",
                               "20", "--device", "cpu"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res["episodes"] == 20 and 0 <= res["accuracy"] <= 1 and res["ci95"] >= 0
    for proto, code in (("filtered_mean", 0), ("mode", 2)):
        ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                                   "--prototype", proto], capture_output=True, text=True)
        assert ev.returncode == code, ev.stderr
    assert "prototype: expected one of" in ev.stderr and "filtered_mean" in ev.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                               "--inner-steps", "3"], capture_output=True, text=True)
    assert ev.returncode == 2 and "inner_steps: only MAML-family runs" in ev.stderr
    for flag in ("--ways", "--shots"):  # 0 used to fall back on the run's setting
        ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", flag, "0"],
                            capture_output=True, text=True)
        assert ev.returncode == 2 and f"{flag[2:]}: must be >= 1, got 0" in ev.stderr
    # A run stopped before its first validation holds only last.pt.
    (run / "best.pt").unlink()
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu"],
                        capture_output=True, text=True)
    assert ev.returncode == 2 and "--checkpoint last" in ev.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                               "--checkpoint", "last"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["episodes"] == 4
    bad = subprocess.run(cmd + ["train", "--learner", "snail", "--episodes", "1", "--out",
                                str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "learner: expected one of" in bad.stderr


def test_sinusoid_regression_run_and_eval(tmp_path):
    cfg = TrainConfig(learner="maml", dataset="sinusoid", shots=5, queries=10, meta_batch=5,
                      inner_lr=0.01, episodes=60, val_every=6, val_episodes=20, device="cpu")
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result["steps"] == 12 and result["best_val_mse"] > 0
    ev = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                         "--shots", "5", "--episodes", "30", "--device", "cpu"],
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert set(res["mse_by_steps"]) == {"1", "5", "10"} and res["episodes"] == 30
    assert all(v > 0 for v in res["mse_by_steps"].values())
    bad = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                          "--prototype", "median"], capture_output=True, text=True)
    assert bad.returncode == 2 and "only ProtoNet runs have prototypes" in bad.stderr
    for flags, words in ((["--ways", "7"], "ways: a sinusoid run is evaluated on drawn"),
                         (["--split", "test"], "split: a sinusoid run"),
                         (["--queries", "0"], "queries: must be >= 1, got 0"),
                         (["--inner-steps", "-1"], "inner_steps: must be >= 0, got -1")):
        bad = subprocess.run([sys.executable, "-m", "metarobust", "eval",
                              str(tmp_path / "run"), *flags], capture_output=True, text=True)
        assert bad.returncode == 2 and words in bad.stderr, (flags, bad.stderr)
    ev = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                         "--shots", "5", "--episodes", "30", "--device", "cpu",
                         "--inner-steps", "5"], capture_output=True, text=True)
    res5 = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res5["mse"] == res5["mse_by_steps"]["5"] and "after 5 steps" in ev.stdout
    with pytest.raises(ValueError, match="regression"):
        TrainConfig(learner="protonet", dataset="sinusoid", episodes=1).check()
