"""metarobust.benchmark.spec: the spec's fields, their defaults and every bad field refused
with an error naming the key, the value and what is allowed; the shipped specs load."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from metarobust.benchmark import check_spec, load_spec
from metarobust.config import LEARNERS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {
        "reference": "proto",
        "budget": {"steps": 3},
        "test": {"dataset": "glyphs", "ways": 3, "shots": 1, "queries": 2, "episodes": 4},
        "threats": {"grid": {"clean": [], "gaussian_noise": [0.2]}},
        "train": {"dataset": "glyphs", "model": "conv4_mini", "image_size": 16},
        "methods": [{"name": "proto", "train": {"learner": "protonet"}},
                    {"train": {"learner": "fomaml", "meta_batch": 2}}],
    }


def test_fields_and_defaults():
    spec = check_spec(base())
    assert [m.name for m in spec.methods] == ["proto", "fomaml"]
    assert spec.methods[1].config == TrainConfig(
        dataset="glyphs", model="conv4_mini", image_size=16, learner="fomaml", meta_batch=2,
        steps=3)
    assert (spec.seed, spec.device, spec.corrupt, spec.pgd_steps) == (1234, "auto", "query", 20)
    assert spec.label_noise_shots == (5,)
    assert spec.grid == {"clean": [0.0], "gaussian_noise": [0.2]}
    assert spec.evaluation()["episodes"] == 4


def test_shared_budget_replaces_each_config_budget(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('learner = "maml"\ndataset = "glyphs"\nepisodes = 1000\n')
    data = base()
    data["budget"] = {"minutes": 1.5}
    data["methods"].append({"config": str(cfg), "train": {"learner": "anil"}})
    m = check_spec(data).methods[2]
    assert m.name == "c"  # the file's stem
    assert (m.config.learner, m.config.episodes, m.config.minutes) == ("anil", None, 1.5)
    del data["budget"]  # without a shared budget each config keeps its own
    data["methods"], data["reference"] = data["methods"][2:], "c"
    assert check_spec(data).methods[0].config.episodes == 1000


def test_relative_paths_start_from_the_spec_file(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    data = base()
    data["methods"].append({"run": "runs/a"})
    spec = check_spec(data, base=tmp_path)
    assert spec.methods[2].run == tmp_path / "runs" / "a" and spec.methods[2].name == "a"


def _set(path: str, value):
    def change(d: dict) -> None:
        *head, last = path.split(".")
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if value is _DEL:
            del d[last]
        elif isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return change


_DEL = object()

BAD = [
    # (change, error type, pieces the message must hold)
    (_set("bogus", 1), ValueError, ["unknown keys bogus", "allowed"]),
    (_set("seed", -1), ValueError, ["seed", "-1"]),
    (_set("seed", "1"), TypeError, ["seed", "'1'", "integer"]),
    (_set("device", "tpu"), ValueError, ["device", "'tpu'", "cpu"]),
    (_set("reference", "nope"), ValueError, ["reference", "'nope'", "proto, fomaml"]),
    (_set("budget", {"steps": 3, "minutes": 1}), ValueError, ["budget", "not both"]),
    (_set("budget", {"epochs": 3}), ValueError, ["budget", "epochs", "steps, minutes"]),
    (_set("budget.steps", 0), ValueError, ["budget.steps", "0"]),
    (_set("budget.steps", 2.5), TypeError, ["budget.steps", "2.5"]),
    (_set("budget", {"minutes": float("nan")}), ValueError, ["budget.minutes", "nan"]),
    (_set("budget", {"minutes": True}), TypeError, ["budget.minutes", "True"]),
    (_set("test", _DEL), TypeError, ["test", "table"]),
    (_set("test.ways", _DEL), ValueError, ["test", "'ways'"]),
    (_set("test.ways", 1), ValueError, ["test.ways", "1", "2.."]),
    (_set("test.shots", "1"), TypeError, ["test.shots", "'1'"]),
    (_set("test.episodes", 0), ValueError, ["test.episodes", "0"]),
    (_set("test.dataset", "sinusoid"), ValueError, ["test.dataset", "'sinusoid'", "omniglot"]),
    (_set("test.split", 3), TypeError, ["test.split", "3", "string"]),
    (_set("test.image_size", 0), ValueError, ["test.image_size", "0"]),
    (_set("test.colour", 1), ValueError, ["test", "colour", "allowed"]),
    (_set("threats.grid", _DEL), ValueError, ["threats", "'grid'"]),
    (_set("threats.grid", {"bogus": [1]}), ValueError, ["threats.grid", "'bogus'", "clean"]),
    (_set("threats.grid", {"fgsm": [-1]}), ValueError, ["threats.grid['fgsm']", "-1"]),
    (_set("threats.grid", {"corruption:thin": [6]}), ValueError, ["corruption:thin", "6"]),
    (_set("threats.corrupt", "all"), ValueError, ["threats.corrupt", "'all'", "support"]),
    (_set("threats.pgd_steps", -2), ValueError, ["threats.pgd_steps", "-2"]),
    (_set("threats.label_noise_shots", 5), TypeError, ["threats.label_noise_shots", "5"]),
    (_set("threats.label_noise_shots", [0]), ValueError, ["threats.label_noise_shots", "0"]),
    (_set("methods", []), TypeError, ["methods", "[]"]),
    (_set("methods", {"a": 1}), TypeError, ["methods", "array"]),
    (_set("methods.0", 3), TypeError, ["methods[0]", "3", "table"]),
    (_set("methods.0", {"name": "x"}), ValueError, ["methods[0]", "run, config or train"]),
    (_set("methods.0", {"run": "r", "train": {}}), ValueError, ["methods[0]", "run with train"]),
    (_set("methods.0.name", "a/b"), ValueError, ["methods[0].name", "'a/b'"]),
    (_set("methods.0.name", "fomaml"), ValueError, ["methods", "'fomaml'", "twice"]),
    (_set("methods.0.colour", 1), ValueError, ["methods[0]", "colour"]),
    (_set("methods.0.train.learner", "nope"), ValueError,
     ["methods[0]", "learner", "'nope'", ", ".join(LEARNERS)]),
    (_set("methods.0.train.ways", 0), ValueError, ["methods[0]", "ways", "0"]),
    (_set("methods.0.train.lr", "fast"), TypeError, ["methods[0]", "lr", "'fast'"]),
    (_set("methods.0.train.wings", 2), ValueError, ["methods[0]", "wings"]),
    (_set("methods.1.config", "missing.toml"), FileNotFoundError, ["methods[1].config",
                                                                   "missing.toml"]),
    (_set("train.lr", -1.0), ValueError, ["methods[0]", "lr", "-1.0"]),
    (_set("train", [1]), TypeError, ["train", "table"]),
]


@pytest.mark.parametrize("change,kind,pieces", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_fields_are_named(change, kind, pieces):
    data = copy.deepcopy(base())
    change(data)
    with pytest.raises(kind) as e:
        check_spec(data, source="S.toml")
    for piece in pieces:
        assert piece in str(e.value), (piece, str(e.value))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="spec: no file"):
        load_spec(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("seed = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_spec(tmp_path / "bin.toml")
    with pytest.raises(TypeError, match="spec: expected a table"):
        check_spec([1])


def test_shipped_specs_load_and_cover_every_learner():
    cpu = load_spec(ROOT / "benchmarks" / "omniglot_5w1s.toml")
    gpu = load_spec(ROOT / "benchmarks" / "omniglot_5w1s_gpu.toml")
    for spec in (cpu, gpu):
        learners = {m.config.learner for m in spec.methods}
        assert learners == set(LEARNERS), learners
        assert spec.dataset == "omniglot" and (spec.ways, spec.shots) == (5, 1)
    assert cpu.budget == {"minutes": 2.5} and cpu.device == "cpu"
    assert all(m.config.minutes == 2.5 and m.config.steps is None for m in cpu.methods)
    # the GPU spec trains the published recipes with their own budgets
    assert gpu.budget == {} and {m.config.episodes for m in gpu.methods} == \
        {200000, 1920000, 60000, 100000, None}
    # the transfer baselines' budgets are pre-training (and meta-stage) steps
    assert {m.config.learner: m.config.steps for m in gpu.methods
            if m.config.episodes is None} == {"simpleshot": 20000, "baseline_pp": 20000,
                                              "meta_baseline": 40000, "tim": 20000}
