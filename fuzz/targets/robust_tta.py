"""Target: ``mr.robust.TTALearner`` evaluating a batch (ProtoNet over a linear body with
BatchNorm): per-episode accuracies in [0, 1], ``"none"`` equal to the learner's own
evaluation, and the learner's parameters, buffers and modes left exactly as they were."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from ..case import Draft, Target
from ..spec import Choice, Float, Int, Obj
from ..values import num
from .robust import episode_batch

MODES = ("none", "bn", "tent")


@st.composite
def valid_tta(draw):
    draft = Draft()
    facts = draw(episode_batch(draft, min_ways=1))
    d = draw(st.integers(2, 6))
    draft.setup += [f"torch.manual_seed({draw(st.integers(0, 99))})",
                    "net = torch.nn.Sequential(torch.nn.Flatten(), "
                    f"torch.nn.Linear(64, {d}), torch.nn.BatchNorm1d({d}))",
                    "learner = mr.learners.ProtoNet(net).eval()", f"ways = {facts['ways']}",
                    "saved = {k: v.clone() for k, v in learner.state_dict().items()}"]
    draft.val("learner", "learner")
    draft.val("mode", repr(draw(st.sampled_from(MODES))))
    lr = draw(st.floats(1e-5, 1.0))
    draft.val("lr", repr(lr), value=lr)
    steps = draw(st.integers(1, 3))
    draft.val("steps", num(steps), value=steps)
    draft.meta = {"facts": facts, "env": ["batch", "saved"]}
    return draft


def check_tta(result, args, meta):
    f, learner, b = meta["facts"], args["learner"], args["batch"]
    assert isinstance(result, torch.Tensor) and tuple(result.shape) == (f["count"],), result
    assert bool(((result >= 0) & (result <= 1)).all()), f"accuracies {result}"
    for k, v in learner.state_dict().items():
        assert torch.equal(v, args["saved"][k]), f"{k} changed"
    assert not any(m.training for m in learner.modules()), "a module left in training mode"
    assert all(p.grad is None for p in learner.parameters()), "a .grad left behind"
    if args["mode"] == "none":
        want = learner.evaluate_batch(b, f["ways"])
        assert torch.equal(result, want), f"accuracies {result}, expected {want}"


TARGETS = [
    Target(name="robust.TTALearner",
           call="mr.robust.TTALearner(learner, mode, lr=lr, steps=steps)"
                ".evaluate_batch(batch, ways)",
           params={"learner": Obj(), "mode": Choice(MODES),
                   "lr": Float(0.0, lo_open=True), "steps": Int(1, huge="skip")},
           valid=valid_tta(), check=check_tta),
]
