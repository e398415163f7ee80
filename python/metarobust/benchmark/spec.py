"""A benchmark spec: which methods, which test episodes, which threats.

A spec is a TOML file (or the same mapping, :func:`check_spec`)::

    name = "omniglot-5w1s"       # optional: a title for the report
    reference = "protonet"       # the method every other is compared with (paired)
    seed = 1234                  # episodes and perturbations: the same for every method
    device = "auto"              # auto | cpu | cuda

    [budget]                     # optional: one shared training budget, steps or minutes
    minutes = 3                  # (without it, each training config keeps its own)

    [test]                       # the test episodes
    dataset = "omniglot"         # glyphs | omniglot | folder | idx | cache
    split = "evaluation"         # optional: the dataset's test split by default
    data_root = "..."            # optional: $METAROBUST_DATA by default
    image_size = 28              # optional: the dataset's default
    ways = 5
    shots = 1
    queries = 15
    episodes = 200               # per cell

    [threats]                    # the robustness grid (metarobust.robust.grid)
    corrupt = "query"            # optional: query | support | both
    pgd_steps = 20               # optional
    label_noise_shots = [5]      # optional
    [threats.grid]
    clean = []
    gaussian_noise = [0.1, 0.3]

    [train]                      # optional: training fields shared by the methods below

    [[methods]]                  # one table per method
    name = "protonet"            # optional: the learner, the config file's or run's name
    train = { learner = "protonet" }        # training fields over [train] (TrainConfig)
    # config = "configs/x.toml"  # or a training config file (relative to the spec), its
    #                            # fields over [train] and refined by train = {...}
    # run = "runs/x"             # or a finished `metarobust train` run to reuse

Every bad field is refused with a ValueError or TypeError naming the key, its value and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import DATASETS, DEVICES, TrainConfig, read_toml
from ..corruption_info import CORRUPT_TARGETS
from ..robust.grid import check_grid

__all__ = ["BUDGETS", "Method", "Spec", "check_spec", "load_spec"]

BUDGETS = ("steps", "minutes")
TEST_DATASETS = tuple(d for d in DATASETS if d != "sinusoid")
_TOP = ("name", "reference", "seed", "device", "budget", "test", "threats", "train", "methods")
_TEST = ("dataset", "split", "data_root", "image_size", "ways", "shots", "queries", "episodes")
_THREATS = ("corrupt", "pgd_steps", "label_noise_shots", "grid")
_METHOD = ("name", "train", "config", "run")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BUDGET_FIELDS = ("steps", "episodes", "minutes")
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclasses.dataclass(frozen=True)
class Method:
    """One method: a run to reuse (``run``) or a training config to run first (``config``,
    the shared budget applied)."""

    name: str
    run: Path | None = None
    config: TrainConfig | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    reference: str
    seed: int
    device: str
    methods: tuple[Method, ...]
    dataset: str
    split: str | None
    data_root: str | None
    image_size: int | None
    ways: int
    shots: int
    queries: int
    episodes: int
    grid: dict[str, list[float]]
    corrupt: str
    pgd_steps: int
    label_noise_shots: tuple[int, ...]
    budget: dict[str, float]

    def evaluation(self) -> dict[str, Any]:
        """What makes two evaluations paired (and a stored cell reusable)."""
        return {k: getattr(self, k) for k in (
            "seed", "dataset", "split", "data_root", "image_size", "ways", "shots", "queries",
            "episodes", "corrupt", "pgd_steps")} | {
            "label_noise_shots": list(self.label_noise_shots)}


def _where(key: str, source: str) -> str:
    return f"{key} in {source}"


def _table(data: Mapping[str, Any], key: str, source: str, allowed: tuple[str, ...],
           required: bool = False) -> dict[str, Any]:
    """``data[key]`` as a table of known keys (``{}`` when absent and not required)."""
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{_where(key, source)}: expected a table, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ValueError(f"{_where(key, source)}: unknown keys {', '.join(unknown)}; allowed: "
                         f"{', '.join(allowed)}")
    return dict(value)


def _int(value: Any, key: str, source: str, lo: int, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{_where(key, source)}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{_where(key, source)}: must be in {lo}..{hi}, got {value}")
    return value


def _str(value: Any, key: str, source: str, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{_where(key, source)}: expected a string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{_where(key, source)}: expected one of {', '.join(allowed)}; got "
                         f"{value!r}")
    return value


def _optional_str(value: Any, key: str, source: str) -> str | None:
    return None if value is None else _str(value, key, source)


def _budget(data: Mapping[str, Any], source: str) -> dict[str, float]:
    budget = _table(data, "budget", source, BUDGETS)
    if len(budget) > 1:
        raise ValueError(f"{_where('budget', source)}: give steps or minutes, not both; got "
                         f"{budget!r}")
    if "steps" in budget:
        return {"steps": _int(budget["steps"], "budget.steps", source, 1)}
    if "minutes" in budget:
        m = budget["minutes"]
        if isinstance(m, bool) or not isinstance(m, (int, float)):
            raise TypeError(f"{_where('budget.minutes', source)}: expected a number, got "
                            f"{m!r}")
        if not (math.isfinite(m) and m > 0):
            raise ValueError(f"{_where('budget.minutes', source)}: must be finite and > 0, "
                             f"got {m!r}")
        return {"minutes": float(m)}
    return {}


def _test(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    t = _table(data, "test", source, _TEST, required=True)
    for key in ("dataset", "ways", "shots", "queries", "episodes"):
        if key not in t:
            raise ValueError(f"{_where('test', source)}: missing key {key!r} (required: "
                             "dataset, ways, shots, queries, episodes)")
    out: dict[str, Any] = {"dataset": _str(t["dataset"], "test.dataset", source, TEST_DATASETS)}
    for key in ("ways", "shots", "queries", "episodes"):
        out[key] = _int(t[key], f"test.{key}", source, 2 if key == "ways" else 1, 10**6)
    out["split"] = _optional_str(t.get("split"), "test.split", source)
    out["data_root"] = _optional_str(t.get("data_root"), "test.data_root", source)
    size = t.get("image_size")
    out["image_size"] = None if size is None else _int(size, "test.image_size", source, 1,
                                                       4096)
    return out


def _threats(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    t = _table(data, "threats", source, _THREATS, required=True)
    if "grid" not in t:
        raise ValueError(f"{_where('threats', source)}: missing key 'grid' (a table "
                         "{family = [strength, ...]})")
    try:
        grid = check_grid(t["grid"])
    except (TypeError, ValueError) as e:
        raise type(e)(f"threats.{e} in {source}") from None
    shots = t.get("label_noise_shots", [5])
    if not isinstance(shots, list):
        raise TypeError(f"{_where('threats.label_noise_shots', source)}: expected a list of "
                        f"shot counts, got {shots!r}")
    return {"grid": grid,
            "corrupt": _str(t.get("corrupt", "query"), "threats.corrupt", source,
                            CORRUPT_TARGETS),
            "pgd_steps": _int(t.get("pgd_steps", 20), "threats.pgd_steps", source, 0, 10**4),
            "label_noise_shots": tuple(_int(s, "threats.label_noise_shots", source, 1, 10**4)
                                       for s in shots)}


def _train_config(fields: Mapping[str, Any], key: str, source: str,
                  budget: dict[str, float]) -> TrainConfig:
    """A checked TrainConfig from ``fields``, the shared budget replacing its own."""
    if budget:
        fields = {k: v for k, v in fields.items() if k not in _BUDGET_FIELDS} | budget
    try:
        cfg = TrainConfig.from_dict(dict(fields), source=f"{key} in {source}")
        return cfg.check()
    except (TypeError, ValueError) as e:
        msg = str(e)
        if not msg.startswith(f"{key} in {source}"):
            msg = f"{key}: {msg} (in {source})"
        raise type(e)(msg) from None


def _method(m: Any, i: int, shared: Mapping[str, Any], base: Path | None, source: str,
            budget: dict[str, float]) -> Method:
    key = f"methods[{i}]"
    if not isinstance(m, Mapping):
        raise TypeError(f"{_where(key, source)}: expected a table, got {m!r}")
    m = _table({key: m}, key, source, _METHOD)
    if "run" in m and ("train" in m or "config" in m):
        raise ValueError(f"{_where(key, source)}: a reused run takes no train or config; got "
                         f"run with {', '.join(k for k in ('train', 'config') if k in m)}")
    if "run" not in m and "train" not in m and "config" not in m:
        raise ValueError(f"{_where(key, source)}: give run, config or train (a config's "
                         "fields may be refined by train)")
    if "run" in m:
        path = _path(m["run"], f"{key}.run", base, source)
        return Method(_name(m.get("name", path.name), key, source), run=path)
    fields = dict(shared)
    default = None
    if "config" in m:
        path = _path(m["config"], f"{key}.config", base, source)
        fields.update(_config_file(path, f"{key}.config", source))
        default = path.stem
    if "train" in m:
        fields.update(_table(m, "train", f"{key} of {source}", _TRAIN_FIELDS))
    cfg = _train_config(fields, key, source, budget)
    default = default or cfg.learner
    return Method(_name(m.get("name", default), key, source), config=cfg)


def _path(value: Any, key: str, base: Path | None, source: str) -> Path:
    path = Path(_str(value, key, source))
    return base / path if base is not None and not path.is_absolute() else path


def _config_file(path: Path, key: str, source: str) -> dict[str, Any]:
    return read_toml(path, f"{key} in {source}")


def _name(value: Any, key: str, source: str) -> str:
    name = _str(value, f"{key}.name", source)
    if not _NAME.fullmatch(name):
        raise ValueError(f"{_where(key + '.name', source)}: {name!r} is not a usable name "
                         "(letters, digits, '.', '_', '-'; at most 64; it names a folder)")
    return name


def _methods(data: Mapping[str, Any], base: Path | None, source: str,
             budget: dict[str, float]) -> tuple[Method, ...]:
    methods = data.get("methods")
    if not isinstance(methods, list) or not methods:
        raise TypeError(f"{_where('methods', source)}: expected a non-empty array of tables "
                        f"([[methods]]), got {methods!r}")
    shared = _table(data, "train", source, _TRAIN_FIELDS)
    out = tuple(_method(m, i, shared, base, source, budget) for i, m in enumerate(methods))
    names = [m.name for m in out]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"{_where('methods', source)}: the name {n!r} is given twice; "
                             "name each method (name = ...)")
    return out


def check_spec(data: Any, base: str | Path | None = None, source: str = "spec") -> Spec:
    """A checked :class:`Spec` from a mapping (a parsed spec file). ``base``: the folder
    that relative ``config``/``run`` paths start from (the spec file's); ``source``: how
    errors name the spec."""
    if not isinstance(data, Mapping):
        raise TypeError(f"spec: expected a table, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in _TOP)
    if unknown:
        raise ValueError(f"{source}: unknown keys {', '.join(unknown)}; allowed: "
                         f"{', '.join(_TOP)}")
    budget = _budget(data, source)
    methods = _methods(data, None if base is None else Path(base), source, budget)
    names = [m.name for m in methods]
    reference = _str(data.get("reference", names[0]), "reference", source)
    if reference not in names:
        raise ValueError(f"{_where('reference', source)}: {reference!r} is not a method; "
                         f"the methods are {', '.join(names)}")
    return Spec(name=_str(data.get("name", "benchmark"), "name", source), reference=reference,
                seed=_int(data.get("seed", 1234), "seed", source, 0, 2**64 - 1),
                device=_str(data.get("device", "auto"), "device", source, DEVICES),
                methods=methods, budget=budget, **_test(data, source),
                **_threats(data, source))


def load_spec(path: str | os.PathLike) -> Spec:
    """The checked spec of a TOML file (relative paths start from its folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"spec: expected the path of a TOML file (str or os.PathLike), got "
                        f"{path!r} ({type(path).__name__})")
    p = Path(path)
    return check_spec(read_toml(p, "spec"), base=p.parent, source=str(p))
