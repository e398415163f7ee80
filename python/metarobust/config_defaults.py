"""The learner- and dataset-dependent defaults of a :class:`~metarobust.config.TrainConfig`
(what :meth:`~metarobust.config.TrainConfig.resolved` fills in) and the checks of the
classifier pre-training options."""

from __future__ import annotations

import math
from typing import Any

# ``cfg`` below is a metarobust.config.TrainConfig (not imported: config imports this module)
TrainConfig = Any

__all__ = ["check_pretraining", "default_image_size", "default_pretrain_share",
           "resolved_fields", "training_cache"]

# the transfer baselines used as pre-trained (no episodic stage): the whole budget
PRETRAINED_ONLY = ("simpleshot", "baseline_pp", "tim")


def default_pretrain_share(cfg: TrainConfig) -> float:
    """``cfg.pretrain_share`` if set, else 1 for the transfer baselines used as
    pre-trained, 0.5 for Meta-Baseline (classifier stage, then the meta stage) and 0."""
    if cfg.pretrain_share is not None:
        return float(cfg.pretrain_share)
    return 1.0 if cfg.learner in PRETRAINED_ONLY else 0.5 if cfg.learner == "meta_baseline" \
        else 0.0


def check_pretraining(cfg: TrainConfig, embedding_learners: tuple[str, ...]) -> None:
    """Raises ValueError naming ``pretrain_share`` or ``batch_size`` when they do not fit
    the learner (the MAML family pre-trains nothing; the pre-trained-only baselines need
    the whole budget)."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1 (images per pre-training step), got "
                         f"{cfg.batch_size}")
    if cfg.pretrain_share is not None:
        _check_share(cfg, cfg.pretrain_share, embedding_learners)
    if default_pretrain_share(cfg) == 1:
        for name, what in (("adversarial", "adversarial querying"),
                           ("augment", "corruption augmentation")):
            if getattr(cfg, name):
                raise ValueError(f"{name}: {what} perturbs training episodes; with "
                                 f"pretrain_share 1 ({cfg.learner!r} is trained as a "
                                 f"classifier only) there are none (got {getattr(cfg, name)!r})")


def _check_share(cfg: TrainConfig, share: float, embedding_learners: tuple[str, ...]) -> None:
    if not (math.isfinite(share) and 0 <= share <= 1):
        raise ValueError(f"pretrain_share: must be in [0, 1] (the share of the training "
                         f"budget spent on classifier pre-training), got {share}")
    if share and cfg.learner not in embedding_learners:
        raise ValueError(f"pretrain_share: classifier pre-training is offered for the "
                         f"learners that embed a task ({', '.join(embedding_learners)}); "
                         f"{cfg.learner!r} has an inner loop (got {share})")
    if cfg.learner in PRETRAINED_ONLY and share != 1:
        raise ValueError(f"pretrain_share: {cfg.learner!r} is used as pre-trained (no "
                         f"episodic stage), so pre-training is its whole budget: 1 (got "
                         f"{share})")
    if share and cfg.dataset == "sinusoid":
        raise ValueError("pretrain_share: classifier pre-training reads images; dataset "
                         "'sinusoid' is regression")


def resolved_fields(cfg: TrainConfig, maml: bool, sinusoid: bool, proto_omniglot: bool,
                     default_model: str) -> dict[str, Any]:
    reptile = cfg.learner == "reptile"
    return dict(
        model=cfg.model or default_model,
        image_size=cfg.image_size or default_image_size(cfg),
        # Reptile: the interpolation step decays linearly to 0 (Nichol et al.'s code)
        schedule=cfg.schedule or ("linear" if proto_omniglot or reptile else "cosine"),
        meta_batch=cfg.meta_batch or (25 if sinusoid else 5 if reptile else 32 if maml else 1),
        test_ways=cfg.test_ways or cfg.ways,
        test_shots=cfg.test_shots or cfg.shots,
        test_queries=cfg.test_queries if cfg.test_queries is not None
        else cfg.queries if sinusoid else 15,
        test_inner_steps=cfg.test_inner_steps or cfg.inner_steps,
        # Tiny networks gain nothing from intra-op threads, and on a busy machine their
        # barriers cost far more than the arithmetic.
        threads=cfg.threads or (1 if sinusoid else None),
        # Rotations quadruple the training classes (a short 20-way run otherwise sees each
        # background character a few dozen times and overfits). Split files name their own.
        rotations=cfg.rotations if cfg.rotations is not None
        else cfg.dataset == "omniglot" and (cfg.split or "background") in (
            "background", "evaluation") and training_cache(cfg) is None,
        # Learning rates from short-budget runs (experiments/figures.md).
        # Reptile's lr is its interpolation step (plain SGD on theta - phi)
        lr=cfg.lr or (3e-3 if sinusoid else 6e-3 if proto_omniglot else 1.0 if reptile
                      else 1e-3),
        channels_last=(cfg.channels_last if cfg.channels_last is not None
                       else cfg.learner == "protonet"),
        pretrain_share=default_pretrain_share(cfg),
    )


def training_cache(cfg: TrainConfig) -> Any:
    """The cache directory the training split is read from, if the data root holds one."""
    from . import data

    if cfg.dataset in ("glyphs", "sinusoid"):
        return None
    return data.find_cache(data.resolve_data_root(cfg.data_root), cfg.split, "train")


def default_image_size(cfg: TrainConfig) -> int:
    """The image side of ``cfg``'s training data when not set: a cache's own (the data
    root holds one for the training split), else the dataset kind's default."""
    from . import data

    found = training_cache(cfg)
    shape = data.cache_dir.cache_image_shape(found) if found is not None else None
    if shape is not None and shape[1] == shape[2]:
        return shape[1]
    return data.default_image_size(cfg.dataset) or 28
