"""metarobust: few-shot meta-learning that stays reliable under noise, attacks and shift.

The public API (the contract is docs/design.md in the repository):

>>> import metarobust as mr
>>> ds = mr.data.glyphs(num_classes=50, per_class=20, image_size=28, seed=0)
>>> sampler = mr.EpisodeSampler(ds, ways=5, shots=1, queries=15, seed=0)
>>> ep = sampler.sample(0)
>>> ep.support_x.shape
torch.Size([5, 1, 28, 28])
"""

from . import data, evaluate, learners, models, ops, robust
from ._core import __version__
from .episodes import Episode, EpisodeSampler, collate_episodes
from .train import load_run
from .variable_episodes import VariableEpisode, VariableEpisodeSampler

__all__ = [
    "Episode", "EpisodeSampler", "__version__", "collate_episodes", "data", "evaluate",
    "learners", "load_run", "models", "ops", "robust", "VariableEpisode",
    "VariableEpisodeSampler",
]
