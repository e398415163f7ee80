"""Running a benchmark spec: train what needs training, evaluate every method on the same
episodes and perturbations, write the report.

``OUT`` holds ``runs/<method>/`` (the training runs of ``config``/``train`` methods),
``cells/<method>/`` (``train.json``, the training record, and one JSON file per threat cell
with its per-episode accuracies) and the report (:mod:`metarobust.benchmark.report`). Each
cell is stored as it finishes (written to a temporary file and renamed); a rerun reads a
stored cell instead of evaluating it again when it was made with the same evaluation
settings and the same checkpoint (its SHA-256), and leaves a finished training run alone.

Every method is evaluated with :func:`metarobust.robust.run_suite` under the spec's seed:
episode ``i`` of a cell is the same support and query images for every method, and the label
noise, Gaussian noise, corruptions and PGD starts come from the same seeded streams
(:mod:`metarobust.seeds`), so the per-episode accuracies of two methods are paired.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..data.atomic import write_file
from ..robust.suite import run_suite
from ..train import Trainer, load_dataset, load_run, resolve_device
from .paired import paired_rows
from .report import write_benchmark
from .spec import Method, Spec

__all__ = ["cell_name", "load_test_set", "run_benchmark"]


def _log(line: str) -> None:
    print(f"metarobust: {line}", file=sys.stderr)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_file(tmp, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_json(path: Path) -> Any:
    """A stored record, or None when absent or unreadable (it is then made again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cell_name(family: str, strength: float) -> str:
    """The file name of a threat cell's result (``corruption:rotate`` at 3 ->
    ``corruption-rotate@3.0.json``)."""
    return f"{family.replace(':', '-')}@{float(strength)!r}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _reused_run(method: Method) -> dict[str, Any]:
    run = method.run
    assert run is not None
    if not (run / "config.toml").is_file():
        raise FileNotFoundError(f"methods: {method.name}: run = {run} is not a `metarobust "
                                "train` run (no config.toml)")
    cfg = TrainConfig.load(run / "config.toml")
    state = load_checkpoint(run / "last.pt") if (run / "last.pt").is_file() else {}
    return {"name": method.name, "learner": cfg.learner, "run": str(run), "trained": False,
            "train_seconds": state.get("elapsed"), "steps": state.get("step")}


def _train(method: Method, out: Path, progress: bool, log: Callable[[str], None]
           ) -> dict[str, Any]:
    """The training record of a method: its run reused, or trained (or resumed) under
    ``OUT/runs/<method>``; a finished training recorded in ``train.json`` is not redone."""
    if method.run is not None:
        return _reused_run(method)
    cfg = method.config
    assert cfg is not None
    run = out / "runs" / method.name
    path = out / "cells" / method.name / "train.json"
    stored = _read_json(path)
    if (isinstance(stored, dict) and _same_config(stored.get("config"), cfg)
            and (run / "best.pt").is_file()):
        return dict(stored["record"])
    log(f"training {method.name} ({cfg.learner}) into {run}")
    trainer = Trainer(cfg, run, progress=progress)
    result = trainer.fit()
    if not trainer.finished:
        raise RuntimeError(f"methods: {method.name}: the training in {run} did not finish")
    record = {"name": method.name, "learner": cfg.learner, "run": str(run), "trained": True,
              "train_seconds": result["seconds"], "steps": result["steps"]}
    _write_json(path, {"config": cfg.to_dict(), "record": record})
    return record


def _same_config(stored: Any, cfg: TrainConfig) -> bool:
    """Whether a stored ``train.json`` config is ``cfg`` (options added since it was
    written at their defaults); an unreadable one is not."""
    if not isinstance(stored, dict):
        return False
    try:
        return TrainConfig.completed(stored) == cfg.to_dict()
    except (TypeError, ValueError):
        return False


def load_test_set(spec: Spec) -> Any:
    """The spec's test dataset (the same images for every method)."""
    cfg = TrainConfig(dataset=spec.dataset, data_root=spec.data_root,
                      image_size=spec.image_size)
    return load_dataset(cfg, spec.split, "test")


def _evaluate(record: dict[str, Any], spec: Spec, test_set: Any, out: Path, device: Any,
              log: Callable[[str], None]) -> tuple[list[dict], list[dict], float]:
    """A method's suite rows (with per-episode accuracies), skipped cells and evaluation
    seconds, cell by cell: stored cells are read, the others evaluated and stored."""
    run = Path(record["run"])
    learner = load_run(run)
    side = int(test_set.images.shape[-1])
    if learner.config.image_size != side:
        raise ValueError(f"methods: {record['name']} was trained on {learner.config.image_size}"
                         f"-pixel images; the test images are {side} pixels (test.image_size)")
    key = {"evaluation": spec.evaluation(), "checkpoint": _sha256(run / "best.pt")}
    rows: list[dict] = []
    skipped: list[dict] = []
    seconds = 0.0
    for family, strengths in spec.grid.items():
        for strength in strengths:
            path = out / "cells" / record["name"] / cell_name(family, strength)
            cell = _read_json(path)
            if not (isinstance(cell, dict) and cell.get("key") == key):
                res = run_suite(
                    learner, test_set, ways=spec.ways, shots=spec.shots, queries=spec.queries,
                    grid={family: [strength]}, episodes=spec.episodes, seed=spec.seed,
                    device=device, source=spec.dataset, image_size=side,
                    data_root=spec.data_root if spec.dataset == "omniglot" else None,
                    label_noise_shots=spec.label_noise_shots, corrupt=spec.corrupt,
                    pgd_steps=spec.pgd_steps, progress=False, per_episode=True,
                    run=record["name"])
                cell = {"key": key, "rows": res["rows"], "skipped": res["skipped"],
                        "seconds": res["seconds"]}
                _write_json(path, cell)
                log(f"{record['name']}: {family} {strength:g} evaluated "
                    f"({res['seconds']:.1f} s)")
            rows += cell["rows"]
            skipped += [{"method": record["name"], **s} for s in cell["skipped"]]
            seconds += float(cell["seconds"])
    return rows, skipped, seconds


def run_benchmark(spec: Spec, out: str | os.PathLike, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Trains (or reuses) every method of ``spec``, evaluates them on the same episodes and
    writes benchmark.json, .csv, .md and .png into ``out``; returns the result (see
    :func:`metarobust.benchmark.report.write_benchmark` for its fields)."""
    log = log or _log
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    records = [_train(m, out, progress, log) for m in spec.methods]
    test_set = load_test_set(spec)
    per_method: dict[str, list[dict]] = {}
    skipped: list[dict] = []
    for record in records:
        rows, skip, seconds = _evaluate(record, spec, test_set, out, device, log)
        per_method[record["name"]] = rows
        skipped += skip
        record["eval_seconds"] = round(seconds, 2)
    result = {"name": spec.name, "reference": spec.reference, **spec.evaluation(),
              "grid": spec.grid, "budget": spec.budget, "methods": records,
              "rows": paired_rows(per_method, spec.reference), "skipped": skipped,
              "seconds": round(time.perf_counter() - t0, 2)}
    result["files"] = write_benchmark(result, out)
    return result
