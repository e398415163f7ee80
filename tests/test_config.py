"""TrainConfig (metarobust.config): learner- and dataset-dependent defaults, bad configs refused
with the field named, the shipped configs, the TOML round trip, options of the other
learner family refused, values of the wrong type named, and the training budget (steps,
episodes)."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
from _runs import tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from metarobust.config import TrainConfig
from metarobust.train import Trainer


@pytest.mark.parametrize("learner, dataset, lr", [
    ("protonet", "omniglot", 6e-3), ("maml", "omniglot", 1e-3), ("protonet", "glyphs", 1e-3),
    ("maml", "sinusoid", 3e-3), ("reptile", "omniglot", 1.0), ("r2d2", "omniglot", 1e-3),
])
def test_default_learning_rates(learner, dataset, lr):
    cfg = TrainConfig(learner=learner, dataset=dataset, data_root="data").resolved()
    assert cfg.lr == lr
    assert TrainConfig(learner=learner, dataset=dataset, data_root="data",
                       lr=0.02).resolved().lr == 0.02


@pytest.mark.parametrize("learner, dataset, model", [
    ("protonet", "omniglot", "conv4_snell_ceil"), ("protonet", "glyphs", "conv4_snell"),
    ("maml", "omniglot", "conv4_finn"), ("maml", "sinusoid", "mlp_sinusoid"),
    ("relation", "omniglot", "conv4_sung"), ("matching", "omniglot", "conv4_snell"),
    ("metaoptnet", "glyphs", "conv4_snell"), ("protomaml", "omniglot", "conv4_finn"),
])
def test_default_models(learner, dataset, model):
    cfg = TrainConfig(learner=learner, dataset=dataset, data_root="data").resolved()
    assert cfg.model == model
    linear = learner == "protonet" and dataset == "omniglot" or learner == "reptile"
    assert cfg.schedule == ("linear" if linear else "cosine")
    assert TrainConfig(learner=learner, dataset=dataset, data_root="data",
                       model="resnet12").resolved().model == "resnet12"


@pytest.mark.parametrize("kw, words", [
    (dict(learner="snail"), "learner: expected one of protonet, matching, relation, r2d2"),
    (dict(learner="matching", dataset="sinusoid"), "learner: 'matching' classifies; dataset "
                                                   "'sinusoid' is regression"),
    (dict(dataset="omniglot", data_root=None), "data_root"),
    (dict(ways=0), "ways: must be >= 1"),
    (dict(episodes=None, minutes=None), "give one of them"),
    (dict(schedule="exponential"), "schedule"),
    (dict(adv_norm="l3"), "adv_norm: expected one of linf, l2"),
    (dict(adv_eps=-0.1), "adv_eps"),
    (dict(adv_steps=0), "adv_steps: must be >= 1"),
    (dict(compile=True, compile_mode="fast"), "compile_mode: expected one of default, "),
    # set, but switched off or of no use to the dataset: refused, not ignored
    (dict(adv_eps=0.1), "adv_eps: configures adversarial querying, which is off"),
    (dict(adv_method="trades"), "adv_method: configures adversarial training, which is off"),
    (dict(adversarial=True, adv_method="fgsm"), "adv_method: expected one of aq, trades, adml"),
    (dict(augment_prob=1.0), "augment_prob: configures corruption augmentation, which is off"),
    (dict(compile_mode="reduce-overhead"), "compile_mode: configures torch.compile, which is"),
    (dict(rotations=True), "rotations: rotated classes are added to Omniglot only"),
    (dict(dataset="idx", data_root="/x", image_size=32), "image_size: dataset 'idx' is not"),
    (dict(learner="maml", dataset="sinusoid", split="background"), "split: sinusoid tasks"),
    (dict(model="bogus"), "model: expected one of conv4_finn"),
    (dict(model="mlp_sinusoid"), "model: 'mlp_sinusoid' does not take dataset 'glyphs'"),
    (dict(learner="maml", dataset="sinusoid", model="conv4_snell"), "needs mlp_sinusoid"),
    (dict(test_queries=0), "test_queries: validation needs >= 1 query per class, got 0"),
    (dict(lr=float("inf")), "lr: must be finite and > 0, got inf"),
    (dict(learner="maml", inner_lr=float("nan")), "inner_lr: must be finite and >= 0"),
    (dict(seed=2**64), "seed: must be in"),
])
def test_bad_configs(kw, words, monkeypatch):
    monkeypatch.delenv("METAROBUST_DATA", raising=False)  # else it stands in for data_root
    with pytest.raises(ValueError, match=words):
        Trainer(tiny(**kw), "/nonexistent/run", progress=False)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    cfg = TrainConfig.load(path)
    assert cfg.dataset == "omniglot"  # all of them; each needs only the data root
    cfg = dataclasses.replace(cfg, data_root="DATA")
    cfg.check()
    resolved = cfg.resolved()
    assert resolved.model == cfg.model and resolved.lr == cfg.lr


def test_config_toml_round_trip_and_unknown_keys(tmp_path):
    cfg = tiny(minutes=1.5, episodes=None, test_ways=7)
    cfg.save(tmp_path / "c.toml")
    assert TrainConfig.load(tmp_path / "c.toml") == cfg
    (tmp_path / "bad.toml").write_text('learner = "protonet"\nwayz = 5\n')
    with pytest.raises(ValueError, match="unknown keys wayz"):
        TrainConfig.load(tmp_path / "bad.toml")


@pytest.mark.parametrize("learner, option, message", [
    ("maml", dict(prototype="median"), "prototype: a ProtoNet option; 'maml' has no prototypes"),
    ("anil", dict(metric="cosine"), "metric: a ProtoNet option; 'anil' has no prototypes"),
    ("protonet", dict(inner_steps=5), "inner_steps: a MAML option; ProtoNet has no inner"),
    ("protonet", dict(inner_lr=0.1), "inner_lr: a MAML option"),
    ("protonet", dict(test_inner_steps=3), "test_inner_steps: a MAML option"),
    ("protonet", dict(metric="l1"), "metric: expected one of sqeuclidean, cosine; got 'l1'"),
    ("protonet", dict(prototype="mode"), "prototype: expected one of mean, median"),
    ("r2d2", dict(inner_steps=5), "inner_steps: a MAML option; 'r2d2' has no inner loop"),
    ("matching", dict(test_inner_steps=3), "test_inner_steps: a MAML option; 'matching'"),
    ("metaoptnet", dict(metric="cosine"), "metric: a ProtoNet option; 'metaoptnet' has no"),
    ("relation", dict(channels_last=True), "channels_last: NHWC convolutions are offered for"),
    ("reptile", dict(prototype="median"), "prototype: a ProtoNet option; 'reptile' has no"),
])
def test_options_of_the_other_learner_family_are_refused(learner, option, message):
    # Silently ignoring them would train something else than the user asked for.
    with pytest.raises(ValueError, match=message):
        tiny(learner=learner, **option).check()
    name, _ = next(iter(option.items()))
    tiny(learner=learner, **{name: TrainConfig.__dataclass_fields__[name].default}).check()
    tiny(learner="protonet", prototype="geometric_median", metric="cosine").check()
    tiny(learner="fomaml", inner_steps=5, inner_lr=0.1, test_inner_steps=3).check()


def _wrong_value(name: str):
    """A value of another type than field ``name``'s."""
    hint = typing.get_type_hints(TrainConfig)[name]
    allowed = typing.get_args(hint) or (hint,)
    if str in allowed:
        return 5
    if bool in allowed:
        return 1  # an int is not a switch
    return "five"  # for int and float fields


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainConfig)])
def test_a_value_of_the_wrong_type_is_named(name, tmp_path):
    bad = _wrong_value(name)
    words = rf"^{name}: expected [A-Za-z ]+, got {re.escape(repr(bad))} \({type(bad).__name__}\)"
    with pytest.raises(TypeError, match=words):
        tiny(**{name: bad}).check()
    # in a TOML file: the file is named too (not '<' not supported between str and int)
    path = tmp_path / "c.toml"
    path.write_text(f"{name} = {json.dumps(bad)}\n")
    with pytest.raises(TypeError, match=words + f".* in {re.escape(str(path))}$"):
        TrainConfig.load(path)


def test_ints_are_accepted_for_floats_but_not_bools_for_numbers():
    tiny(lr=1, minutes=2, episodes=None).check()
    with pytest.raises(TypeError, match=r"ways: expected int, got True \(bool\)"):
        tiny(ways=True).check()
    with pytest.raises(TypeError, match=r"lr: expected float or None, got False \(bool\)"):
        tiny(lr=False).check()


@pytest.mark.parametrize("kw, steps", [
    (dict(steps=5, episodes=None), 5),
    (dict(episodes=5, meta_batch=2), 3),   # episodes round up to whole meta-batches
    (dict(steps=3, episodes=5, meta_batch=2), 3),  # both given, and they agree
    (dict(steps=2, episodes=None, minutes=1.0), 2),
])
def test_steps_and_episodes(kw, steps):
    assert Trainer(tiny(**kw), "/nonexistent/run", progress=False).total_steps == steps


@pytest.mark.parametrize("kw, words", [
    (dict(steps=3, episodes=8, meta_batch=2), "steps, episodes: steps 3 and episodes 8 disagree: "
                                              "at meta_batch 2, 8 episodes are 4 steps"),
    (dict(learner="fomaml", steps=1, episodes=64), "at meta_batch 32, 64 episodes are 2 steps"),
    (dict(steps=0), "steps: must be >= 1, got 0"),
    (dict(log_every=0), "log_every: must be >= 1, got 0"),
    (dict(steps=None, episodes=None), "steps, episodes, minutes: give one of them"),
])
def test_bad_budgets_and_log_intervals(kw, words):
    with pytest.raises(ValueError, match=words):
        tiny(**kw).check()


FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(FIELDS),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                       st.floats(allow_nan=True), st.text(max_size=8)))
def test_any_value_is_taken_or_refused_by_name(name, value):
    """Any value of any field: the config checks, or a TypeError/ValueError names a field;
    a value of the wrong type is a TypeError naming that field and the value."""
    allowed = typing.get_args(typing.get_type_hints(TrainConfig)[name])
    allowed = allowed or (typing.get_type_hints(TrainConfig)[name],)
    wrong_type = not any(
        (isinstance(value, float if t is float else t) and not isinstance(value, bool))
        or (t is float and type(value) is int) or (t is bool and type(value) is bool)
        for t in allowed)
    try:
        tiny(**{name: value}).check()
    except TypeError as e:
        assert wrong_type and str(e).startswith(f"{name}: expected "), (name, value, e)
        assert repr(value) in str(e)
    except ValueError as e:
        assert not wrong_type, (name, value, e)
        assert re.match(r"^[a-z_]+(, [a-z_]+)*( \+ [a-z_]+)?: ", str(e)), e
    else:
        assert not wrong_type


@pytest.mark.parametrize("learner, meta_batch, schedule", [
    ("reptile", 5, "linear"), ("protomaml", 32, "cosine"), ("matching", 1, "cosine"),
    ("relation", 1, "cosine"), ("r2d2", 1, "cosine"), ("metaoptnet", 1, "cosine"),
])
def test_defaults_of_the_other_learners(learner, meta_batch, schedule):
    cfg = TrainConfig(learner=learner, dataset="glyphs", episodes=10).check().resolved()
    assert (cfg.meta_batch, cfg.schedule) == (meta_batch, schedule)
    assert cfg.channels_last is False  # NHWC is ProtoNet's
