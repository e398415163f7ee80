"""Targets: ``metarobust.benchmark.check_spec`` (a parsed spec) and ``load_spec`` (a TOML
file): valid specs of any learner in ``metarobust.config.LEARNERS`` against their fields;
each spec field broken in turn must be refused naming its key."""

from __future__ import annotations

from hypothesis import strategies as st

from metarobust.config import LEARNERS

from ..case import Break, Draft, Target
from ..spec import Obj, Path

SETUP = "import metarobust.benchmark"
GRIDS = ({"clean": []}, {"clean": [0], "gaussian_noise": [0.1, 0.3]},
         {"fgsm": [0.03], "label_noise_paired": [0.5]}, {"corruption:rotate": [1, 5]},
         {"domain_shift:glyphs": None, "pgd_support": [0.0, 0.01]})


@st.composite
def _spec(draw) -> dict:
    learners = draw(st.lists(st.sampled_from(LEARNERS), min_size=1, max_size=3))
    methods = [{"name": f"m{i}", "train": {"learner": lr}} for i, lr in enumerate(learners)]
    budget = draw(st.sampled_from([{"steps": 5}, {"minutes": 0.5}, {"minutes": 2}]))
    grid = dict(draw(st.sampled_from(GRIDS)))
    spec = {"reference": f"m{draw(st.integers(0, len(methods) - 1))}", "budget": budget,
            "seed": draw(st.integers(0, 2**64 - 1)),
            "test": {"dataset": draw(st.sampled_from(("glyphs", "omniglot"))),
                     "ways": draw(st.integers(2, 20)), "shots": draw(st.integers(1, 5)),
                     "queries": draw(st.integers(1, 15)), "episodes": draw(st.integers(1, 600))},
            "threats": {"grid": {k: v for k, v in grid.items() if v is not None},
                        "pgd_steps": draw(st.integers(0, 40))},
            "train": {"dataset": "glyphs", "ways": draw(st.integers(2, 10))},
            "methods": methods}
    if any(v is None for v in grid.values()):  # no strength: an empty list means the same
        spec["threats"]["grid"]["domain_shift:glyphs"] = []
    return spec


@st.composite
def valid_check_spec(draw):
    spec = draw(_spec())
    draft = Draft(setup=[SETUP], meta={"spec": spec})
    draft.val("spec", repr(spec))
    return draft


@st.composite
def valid_load_spec(draw):
    spec = draw(_spec())
    draft = Draft(setup=[SETUP, "import tomli_w",
                         f"open(os.path.join(tmp, 's.toml'), 'w').write(tomli_w.dumps({spec!r}))"],
                  meta={"spec": spec})
    draft.val("spec", "os.path.join(tmp, 's.toml')")
    return draft


def check_spec_result(result, args, meta):
    spec = meta["spec"]
    assert [m.name for m in result.methods] == [m["name"] for m in spec["methods"]]
    for m, given in zip(result.methods, spec["methods"]):
        cfg = m.config
        assert cfg.learner == given["train"]["learner"] and cfg.ways == spec["train"]["ways"]
        # the shared budget, and only it
        assert {k: getattr(cfg, k) for k in ("steps", "episodes", "minutes")
                if getattr(cfg, k) is not None} == spec["budget"], cfg
    assert result.reference == spec["reference"] and result.seed == spec["seed"]
    for k in ("ways", "shots", "queries", "episodes", "dataset"):
        assert getattr(result, k) == spec["test"][k], k
    assert list(result.grid) == list(spec["threats"]["grid"])
    assert result.pgd_steps == spec["threats"]["pgd_steps"]


# (a change of the spec, the names its error may give)
def _changes(spec: dict) -> list[tuple[str, dict, tuple[str, ...]]]:
    def with_(path: tuple, value) -> dict:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
        out["methods"] = [dict(m, train=dict(m["train"])) for m in spec["methods"]]
        d = out
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return out

    return [
        ("test.ways 1", with_(("test", "ways"), 1), ("test.ways",)),
        ("test.shots str", with_(("test", "shots"), "1"), ("test.shots",)),
        ("test.episodes 0", with_(("test", "episodes"), 0), ("test.episodes",)),
        ("test.dataset sinusoid", with_(("test", "dataset"), "sinusoid"), ("test.dataset",)),
        ("test not a table", with_(("test",), 3), ("test",)),
        ("seed -1", with_(("seed",), -1), ("seed",)),
        ("seed 2**64", with_(("seed",), 2**64), ("seed",)),
        ("device tpu", with_(("device",), "tpu"), ("device",)),
        ("reference unknown", with_(("reference",), "zz"), ("reference",)),
        ("unknown top key", with_(("bogus",), 1), ("bogus",)),
        ("budget both", with_(("budget",), {"steps": 1, "minutes": 1}), ("budget",)),
        ("budget steps 0", with_(("budget",), {"steps": 0}), ("budget.steps",)),
        ("budget minutes -1", with_(("budget",), {"minutes": -1.0}), ("budget.minutes",)),
        ("budget minutes bool", with_(("budget",), {"minutes": True}), ("budget.minutes",)),
        ("grid family", with_(("threats", "grid"), {"bogus": [1]}), ("threats.grid",)),
        ("grid severity", with_(("threats", "grid"), {"corruption:thin": [9]}),
         ("threats.grid",)),
        ("pgd_steps -1", with_(("threats", "pgd_steps"), -1), ("threats.pgd_steps",)),
        ("corrupt all", with_(("threats", "corrupt"), "all"), ("threats.corrupt",)),
        ("methods empty", with_(("methods",), []), ("methods",)),
        ("method not a table", with_(("methods",), [1]), ("methods",)),
        ("learner unknown", with_(("methods",), [{"name": "m0", "train": {"learner": "x"}}]),
         ("methods",)),
        ("train ways 0", with_(("train", "ways"), 0), ("methods",)),
        ("method name slash", with_(("methods",), [{"name": "a/b", "train": {}}]),
         ("methods",)),
    ]


def check_spec_breaks(draft):
    return [Break("spec", repr(bad), how, names) for how, bad, names in
            _changes(draft.meta["spec"])]


def load_spec_breaks(draft):
    spec = draft.meta["spec"]
    write = "open(os.path.join(tmp, 'b.toml'), '{mode}').write({data!r})"
    path = "os.path.join(tmp, 'b.toml')"
    out = [Break("spec", path, "not TOML", ("spec",),
                 setup=(write.format(mode="w", data="seed = ["),)),
           Break("spec", path, "not UTF-8", ("spec",),
                 setup=(write.format(mode="wb", data=b"\xff\xfe\x00"),))]
    for how, bad, names in _changes(spec)[:8]:
        if "2**64" in how:
            continue  # beyond TOML's integers
        out.append(Break("spec", path, how, names, setup=(
            "import tomli_w", write.format(mode="w", data="").replace(
                "''", f"tomli_w.dumps({bad!r})"))))
    return out


class SpecFile(Path):
    """A spec file path: a missing one is refused naming it."""


TARGETS = [
    Target(name="benchmark.check_spec", call="mr.benchmark.check_spec(spec)",
           params={"spec": Obj()}, valid=valid_check_spec(), check=check_spec_result,
           relational=check_spec_breaks),
    Target(name="benchmark.load_spec", call="mr.benchmark.load_spec(spec)",
           params={"spec": SpecFile()}, valid=valid_load_spec(), check=check_spec_result,
           relational=load_spec_breaks, rejects=("FileNotFoundError",)),
]
