"""metarobust.evaluate: the mean and its 95% interval, and regression evaluation against a
direct loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metarobust as mr
from metarobust.config import TrainConfig
from metarobust.evaluate import mean_ci95
from metarobust.train import Trainer


def test_mean_ci95_against_numpy():
    rng = np.random.default_rng(0)
    v = rng.uniform(size=600)
    mean, ci = mean_ci95(torch.from_numpy(v))
    assert math.isclose(mean, v.mean())
    assert math.isclose(ci, 1.96 * v.std(ddof=1) / math.sqrt(600))
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95(torch.zeros(0))


def test_evaluate_regression_matches_a_direct_loop(tmp_path):
    cfg = TrainConfig(learner="fomaml", dataset="sinusoid", shots=5, queries=10, meta_batch=4,
                      inner_lr=0.01, episodes=8, device="cpu")
    learner = Trainer(cfg, tmp_path / "run", progress=False).learner
    tasks = mr.data.sinusoid(shots=5, queries=10, seed=7)
    res = mr.evaluate.evaluate_regression(learner, tasks, episodes=6, batch_size=4, steps=(2,))
    direct = []
    learner.test_inner_steps = 2
    for i in range(6):
        one = tasks.sample_batch(i, 1)
        direct.append(float(learner.evaluate_batch(one, None)[0]))
    assert math.isclose(res["mse_by_steps"]["2"], float(np.mean(direct)), rel_tol=1e-5)


def _learner_and_sampler():
    ds = mr.data.glyphs(num_classes=10, per_class=6, image_size=16, seed=0)
    learner = mr.learners.ProtoNet(mr.models.build_model("conv4_finn", 1, 16, filters=3))
    return learner, mr.EpisodeSampler(ds, ways=3, shots=1, queries=2, seed=0)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(learner=None), TypeError, "^learner: expected a metarobust Learner"),  # was an
    (dict(sampler=None), TypeError, "^sampler: expected an EpisodeSampler"),    # AttributeError
    (dict(episodes=None), TypeError, "^episodes: expected an int"),
    (dict(episodes=True), TypeError, "^episodes: expected an int"),
    (dict(batch_size=0), ValueError, "^batch_size: must be >= 1"),  # was silently 1
    (dict(batch_size="x"), TypeError, "^batch_size: expected an int"),
    (dict(device="gpu"), ValueError, "^device: 'gpu' is not a torch device"),
    (dict(device=-1), ValueError, "^device: -1 is not a torch device"),
    (dict(start=-1), ValueError, "^start: must be in"),
    (dict(progress=None), TypeError, "^progress: expected a bool"),
])
def test_evaluate_arguments_are_named(kwargs, error, words):
    learner, sampler = _learner_and_sampler()
    args = dict(learner=learner, sampler=sampler, episodes=2, progress=False) | kwargs
    with pytest.raises(error, match=words):
        mr.evaluate.evaluate(**args)


def test_evaluate_names_the_sampler_whose_ways_do_not_fit_the_learner():
    # the error named `ways`, which evaluate does not take
    _, sampler = _learner_and_sampler()
    maml = mr.learners.MAML(mr.models.build_model("conv4_finn", 1, 16, filters=3), ways=5)
    with pytest.raises(ValueError, match="^sampler: 3-way episodes for a classification "
                                         "learner with 5 outputs"):
        mr.evaluate.evaluate(maml, sampler, 2, progress=False)
    if not torch.cuda.is_available():  # was torch's RuntimeError about the NVIDIA driver
        with pytest.raises(ValueError, match="^device: 'cuda' needs CUDA"):
            mr.evaluate.evaluate(maml, sampler, 2, progress=False, device="cuda")


def test_evaluate_regression_arguments_are_named():
    learner = mr.learners.MAML(mr.models.mlp_sinusoid(), task="regression")
    tasks = mr.data.sinusoid()
    classifier, _ = _learner_and_sampler()
    cases = [
        ((classifier, tasks), {}, ValueError, "^learner: expected a regression MAML"),
        ((learner, None), {}, TypeError, "^tasks: expected a task family"),
        ((learner, tasks), dict(steps=(1, -1)), ValueError, "^steps: must be >= 0"),  # was run
        ((learner, tasks), dict(steps=5), TypeError, "^steps: expected a tuple of ints"),
        ((learner, tasks), dict(batch_size=0), ValueError, "^batch_size: must be >= 1"),
        ((learner, tasks), dict(batch_size=None), TypeError, "^batch_size: expected an int"),
    ]
    for args, kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            mr.evaluate.evaluate_regression(*args, episodes=2, **kwargs)
    with pytest.raises(TypeError, match="^values: expected a torch.Tensor"):
        mean_ci95([1.0, 2.0])  # was an AttributeError
