"""metarobust.cli._common: what the eval and robustness commands share."""

from __future__ import annotations

import pytest

from metarobust.cli._common import PROTOTYPE_HELP, eval_split, set_test_prototype
from metarobust.learners import MAML, ProtoNet
from metarobust.models import conv4_mini, conv4_snell
from metarobust.ops import METHODS


def test_default_test_splits():
    assert eval_split("glyphs", None) == "test"
    assert eval_split("omniglot", None) == "evaluation"
    assert eval_split("folder", None) is None and eval_split("omniglot", "x.txt") == "x.txt"


def test_prototype_choice():
    assert all(m in PROTOTYPE_HELP for m in METHODS)
    learner = ProtoNet(conv4_snell())
    set_test_prototype(learner, None)
    assert learner.prototype == "mean"
    set_test_prototype(learner, "median")
    assert learner.prototype == "median"
    with pytest.raises(ValueError, match="prototype: expected one of .*; got 'mode'"):
        set_test_prototype(learner, "mode")
    with pytest.raises(ValueError, match="only ProtoNet runs have prototypes; this run's "
                                         "learner is MAML"):
        set_test_prototype(MAML(conv4_mini(in_channels=1), ways=5), "median")
