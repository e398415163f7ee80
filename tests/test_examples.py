"""examples/: every script runs, at a tiny size, and does what its docstring says."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import metarobust

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"train_loop", "own_backbone", "own_dataset", "robustness_eval",
              "dataloader_workers", "multi_gpu"}
    assert {p.stem for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == tested


def test_train_loop(capsys):
    result = load("train_loop").main(["--steps", "20", "--meta-batch", "2", "--episodes", "20",
                                      "--classes", "40"])
    assert result["episodes"] == 20 and result["accuracy"] > 0.3   # chance: 0.2
    assert "held-out classes" in capsys.readouterr().out


def test_own_backbone(tmp_path, capsys):
    load("own_backbone").main(["--steps", "8", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "config.toml").is_file()
    assert 'model = "object:' in (tmp_path / "run" / "config.toml").read_text()
    assert "ProtoNet from the run" in capsys.readouterr().out


def test_own_dataset(tmp_path, capsys):
    load("own_dataset").main(["--steps", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "folder: (60, 3, 32, 32) images, 10 classes" in out
    assert "torch Dataset: (60, 1, 28, 28) images, 10 classes" in out
    assert (tmp_path / "run" / "last.pt").is_file()


def test_robustness_eval(tmp_path, capsys):
    load("robustness_eval").main(["--steps", "10", "--episodes", "5", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "robustness.json").read_text())["rows"]
    families = {r["family"] for r in rows}
    assert families == {"clean", "label_noise_symmetric", "gaussian_noise",
                        "corruption:gaussian_blur", "fgsm"}
    assert (tmp_path / "robustness.png").stat().st_size > 0
    assert "filtered-mean prototypes" in capsys.readouterr().out


def test_dataloader_workers(capsys):
    load("dataloader_workers").main(["--workers", "2", "--episodes", "8", "--batch-size", "4"])
    assert "the same as the sampler's" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_multi_gpu_launch_on_two_cpu_processes(tmp_path):
    env = {**os.environ, "NPROC": "2", "DEVICE": "cpu", "STEPS": "2",
           "OUT": str(tmp_path / "run"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(metarobust.__file__).parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(EXAMPLES / "multi_gpu.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "last.pt").is_file()
