"""Training configuration: one dataclass, saved beside every run as TOML.

>>> cfg = TrainConfig(learner="protonet", dataset="glyphs", ways=20, shots=1, queries=5)
>>> cfg.save("run/config.toml"); TrainConfig.load("run/config.toml") == cfg  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LEARNERS = ("protonet", "matching", "relation", "r2d2", "metaoptnet", "maml", "fomaml",
            "metasgd", "anil", "protomaml", "reptile", "simpleshot", "baseline_pp",
            "meta_baseline", "tim")
# transfer baselines: a backbone pre-trained as a classifier over the base classes (the
# trainer's pre-training stage), used as pre-trained; meta_baseline adds an episodic stage
TRANSFER_LEARNERS = ("simpleshot", "baseline_pp", "meta_baseline", "tim")
# learners that classify from one embedding of the task (no inner loop)
EMBEDDING_LEARNERS = ("protonet", "matching", "relation", "r2d2", "metaoptnet",
                      *TRANSFER_LEARNERS)
# learners with a regression mode (sinusoid)
REGRESSION_LEARNERS = ("maml", "fomaml", "metasgd", "anil")
DATASETS = ("glyphs", "omniglot", "folder", "idx", "cache", "sinusoid")
SCHEDULES = ("cosine", "linear", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(eq=False)
class TrainConfig:
    """Everything a ``metarobust train`` run depends on. ``None`` means "the default for
    this learner/dataset" (resolved by :meth:`resolved`)."""

    learner: str = "protonet"
    dataset: str = "glyphs"
    data_root: str | None = None
    split: str | None = None          # training split (dataset default when None)
    val_split: str | None = None      # validation split (none when None, glyphs: "val")
    model: str | None = None          # backbone; conv4_snell (ProtoNet; Omniglot:
                                      # conv4_snell_ceil) / conv4_finn (MAML), or a factory
                                      # "module.path:factory" (metarobust.models.user)
    image_size: int | None = None     # dataset default (data.IMAGE_SIZES; caches: theirs)
    rotations: bool | None = None     # Omniglot training: rotated copies as new classes
                                      # (default: on for background/evaluation splits)
    glyph_classes: int = 1000         # glyphs: number of training classes
    ways: int = 5
    shots: int = 1
    queries: int = 15
    test_ways: int | None = None
    test_shots: int | None = None
    test_queries: int | None = None
    meta_batch: int | None = None     # tasks per step: 1 (ProtoNet) / 32 (MAML)
    pretrain_share: float | None = None  # share of the budget spent pre-training the backbone
                                      # as a classifier of the base classes: 1 (simpleshot,
                                      # baseline_pp, tim), 0.5 (meta_baseline), else 0
    batch_size: int = 128             # images per pre-training step
    inner_steps: int = 1
    inner_lr: float = 0.4
    test_inner_steps: int | None = None
    metric: str = "sqeuclidean"
    prototype: str = "mean"
    lr: float | None = None           # Adam: 1e-3 (sinusoid 3e-3, Omniglot ProtoNet 6e-3)
    schedule: str | None = None       # cosine (linear for ProtoNet on Omniglot)
    steps: int | None = None          # outer optimiser updates in all
    episodes: int | None = None       # or tasks seen in all, rounded up to whole meta-batches
    minutes: float | None = None      # or a time budget (the first budget reached stops)
    val_every: int = 500              # steps between validations
    val_episodes: int = 200
    chunk_size: int | None = None     # tasks per forward/backward chunk (memory bound)
    device: str = "auto"
    threads: int | None = None        # torch CPU threads (sinusoid: 1; else torch's default)
    channels_last: bool | None = None  # NHWC convolutions (ProtoNet default: on)
    bf16: bool = False                # bf16 autocast of the training steps
    compile: bool = False             # torch.compile the backbone for training (ProtoNet)
    compile_mode: str = "default"     # its mode: default | reduce-overhead (CUDA graphs) |
                                      # max-autotune | max-autotune-no-cudagraphs
    adversarial: bool = False         # adversarial querying: PGD on the training queries
    adv_eps: float = 8 / 255          # its L-inf (or L2) radius in [0, 1] pixel units
    adv_steps: int = 7
    adv_step_size: float = 2 / 255
    adv_norm: str = "linf"            # linf | l2
    adv_method: str = "aq"            # the robust objective: aq | trades | adml
    trades_beta: float = 6.0          # trades: weight of the KL term
    adv_inner: bool = False           # trades, MAML family: the TRADES term in the inner loop
    augment: str | None = None        # corruption augmentation: names, comma-separated, or all
    augment_severity: int = 3         # its severities: 1..augment_severity, drawn uniformly
    augment_prob: float = 0.5         # the share of training episodes it corrupts
    noise_train: float | None = None  # Gaussian noise of this std on the training images
                                      # (the sigma `metarobust certify` smooths with)
    seed: int = 0
    checkpoint_every: int = 1000      # steps between resumable checkpoints
    log_every: int = 50               # steps between training lines in metrics.jsonl
    tensorboard: bool = False         # TensorBoard event files too (optional extra)

    def check(self) -> TrainConfig:
        """Raises TypeError or ValueError naming the first bad field and its value."""
        self.check_types()
        self._check_choices()
        self._check_counts()
        self._check_rates()
        self._check_attack_and_compile()
        self._check_objective()
        self._check_learner_options()
        self._check_pretraining()
        self._check_unused_options()
        self._check_augment()
        self._check_dataset()
        self._check_budget()
        return self

    def check_types(self, source: str | None = None) -> TrainConfig:
        """Raises TypeError naming the first field whose value is not of the field's type
        (an int is accepted for a float; ``source``, a config file, is named too)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, allowed = getattr(self, f.name), _allowed_types(hints[f.name])
            if not any(_is_a(value, t) for t in allowed):
                where = f" in {source}" if source else ""
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise TypeError(f"{f.name}: expected {names}, got {value!r} "
                                f"({type(value).__name__}){where}")
        return self

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise ValueError(f"{name}: expected one of {', '.join(allowed)}; got "
                             f"{getattr(self, name)!r}")

    def _check_choices(self) -> None:
        self._choice("learner", LEARNERS)
        self._choice("dataset", DATASETS)
        if self.schedule is not None:
            self._choice("schedule", SCHEDULES)
        self._choice("device", DEVICES)

    def _check_counts(self) -> None:
        for name in ("ways", "shots", "inner_steps", "val_every", "val_episodes",
                     "glyph_classes", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("test_ways", "test_shots", "meta_batch", "test_inner_steps", "steps",
                     "episodes", "chunk_size", "threads", "image_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}: must be >= 1, got {v}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed: must be in [0, 2^64), got {self.seed}")
        if self.queries < 1:
            raise ValueError(f"queries: training needs >= 1 query per class, got {self.queries}")
        if self.test_queries is not None and self.test_queries < 1:
            raise ValueError(f"test_queries: validation needs >= 1 query per class, got "
                             f"{self.test_queries}")

    def _check_rates(self) -> None:
        if not (self.lr is None or 0 < self.lr < math.inf):
            raise ValueError(f"lr: must be finite and > 0, got {self.lr}")
        if not 0 <= self.inner_lr < math.inf:
            raise ValueError(f"inner_lr: must be finite and >= 0, got {self.inner_lr}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes: must be > 0, got {self.minutes}")
        if self.noise_train is not None and not 0 < self.noise_train < math.inf:
            raise ValueError(f"noise_train: must be finite and > 0 (the noise's standard "
                             f"deviation, images in [0, 1]), got {self.noise_train}")
        if self.noise_train is not None and self.dataset == "sinusoid":
            raise ValueError("noise_train: Gaussian noise training perturbs images; dataset "
                             "'sinusoid' is regression")
        if self.steps is None and self.episodes is None and self.minutes is None:
            raise ValueError("steps, episodes, minutes: give one of them (how long to train)")

    def _check_budget(self) -> None:
        """``steps`` and ``episodes`` together must give the same number of steps."""
        if self.steps is None or self.episodes is None:
            return
        batch = self.resolved().meta_batch
        if math.ceil(self.episodes / batch) != self.steps:
            raise ValueError(
                f"steps, episodes: steps {self.steps} and episodes {self.episodes} disagree: "
                f"at meta_batch {batch}, {self.episodes} episodes are "
                f"{math.ceil(self.episodes / batch)} steps (give one of them)")

    def _check_attack_and_compile(self) -> None:
        self._choice("adv_norm", ("linf", "l2"))
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps: must be >= 1, got {self.adv_steps}")
        if not (self.adv_eps >= 0 and self.adv_step_size > 0):
            raise ValueError(f"adv_eps, adv_step_size: must be >= 0 and > 0, got "
                             f"{self.adv_eps}, {self.adv_step_size}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode: expected one of {', '.join(COMPILE_MODES)}, got "
                             f"{self.compile_mode!r}")
        if self.compile and self.learner != "protonet":
            raise ValueError(f"compile: torch.compile of the backbone is offered for ProtoNet; "
                             f"{self.learner!r} differentiates through its inner loop "
                             "(functional calls, double backward), which compiled graphs do "
                             "not support")

    def _check_objective(self) -> None:
        """The robust objective's options (robust.meta_objectives)."""
        self._choice("adv_method", ("aq", "trades", "adml"))
        if not math.isfinite(self.trades_beta) or self.trades_beta < 0:
            raise ValueError(f"trades_beta: must be finite and >= 0, got {self.trades_beta}")
        if not self.adversarial:
            self._refuse_if_set(("adv_method", "trades_beta", "adv_inner"),
                                "configures adversarial training, which is off (set adversarial)")
        if self.adv_method != "trades":
            self._refuse_if_set(("trades_beta", "adv_inner"),
                                f"a TRADES option; adv_method is {self.adv_method!r}")
        if self.adv_method != "aq" and self.learner == "reptile":
            raise ValueError(f"adv_method: {self.adv_method!r} differentiates a query loss; "
                             "Reptile's update is theta - phi (use 'aq' or another learner)")
        if self.adv_inner and self.learner not in ("maml", "fomaml", "metasgd", "anil"):
            raise ValueError(f"adv_inner: the TRADES term in the inner loop needs an inner loop "
                             f"of the MAML family (maml, fomaml, metasgd, anil), got learner "
                             f"{self.learner!r}")

    def _check_augment(self) -> None:
        if self.augment is None:
            return
        if self.dataset == "sinusoid":
            raise ValueError("augment: corruption augmentation perturbs images; dataset "
                             "'sinusoid' is regression")
        from .robust.corruptions import Augment

        try:
            Augment(self.augment, self.augment_severity, self.augment_prob)
        except (TypeError, ValueError) as e:  # the config's names for Augment's arguments
            field, _, rest = str(e).partition(":")
            names = {"names": "augment", "max_severity": "augment_severity",
                     "prob": "augment_prob"}
            raise ValueError(f"{names.get(field, field)}:{rest}") from None

    def _check_dataset(self) -> None:
        if self.adversarial and self.dataset == "sinusoid":
            raise ValueError("adversarial: adversarial querying attacks image classifiers; "
                             "dataset 'sinusoid' is regression")
        if self.dataset == "sinusoid" and self.learner not in REGRESSION_LEARNERS:
            raise ValueError(f"learner: {self.learner!r} classifies; dataset 'sinusoid' is "
                             f"regression (use {', '.join(REGRESSION_LEARNERS)})")
        from .data import DATA_ENV, resolve_data_root

        if self.dataset not in ("glyphs", "sinusoid") and not resolve_data_root(self.data_root):
            raise ValueError(f"data_root: dataset {self.dataset!r} needs --data-root (or "
                             f"{DATA_ENV} set)")

    def _refuse_if_set(self, names: tuple[str, ...], why: str) -> None:
        """Raises ValueError for the first of ``names`` set to other than its default."""
        default = {f.name: f.default for f in fields(self)}
        for name in names:
            if getattr(self, name) != default[name]:
                raise ValueError(f"{name}: {why} (got {getattr(self, name)!r})")

    def _check_learner_options(self) -> None:
        """Options of the other learner family are refused, not silently ignored."""
        from .ops import METHODS, METRICS

        if self.learner in EMBEDDING_LEARNERS:
            who = "ProtoNet" if self.learner == "protonet" else repr(self.learner)
            self._refuse_if_set(("inner_steps", "inner_lr"),
                                f"a MAML option; {who} has no inner loop")
            if self.test_inner_steps not in (None, self.inner_steps):  # resolved: inner_steps
                raise ValueError(f"test_inner_steps: a MAML option; {who} has no inner loop "
                                 f"(got {self.test_inner_steps!r})")
        if self.learner == "protonet":
            for name, allowed in (("metric", METRICS), ("prototype", METHODS)):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name}: expected one of {', '.join(allowed)}; got "
                                     f"{getattr(self, name)!r}")
            return
        self._refuse_if_set(("metric", "prototype"),
                            f"a ProtoNet option; {self.learner!r} has no prototypes")
        if self.channels_last:
            # The MAML family's NCHW fused first block and its double backward's layout
            # conversions took the gain away (measured).
            raise ValueError(f"channels_last: NHWC convolutions are offered for ProtoNet; "
                             f"{self.learner!r} runs NCHW (leave channels_last unset or "
                             "false)")

    def _check_pretraining(self) -> None:
        """The pre-training stage: a share in [0, 1] for the learners that embed a task,
        the whole budget for the transfer baselines without an episodic stage."""
        from .config_defaults import check_pretraining

        check_pretraining(self, EMBEDDING_LEARNERS)
        if not self.resolved().pretrain_share:
            self._refuse_if_set(("batch_size",), "configures classifier pre-training, which "
                                "is off (set pretrain_share)")

    def _check_unused_options(self) -> None:
        """Options whose switch is off, or that the dataset has no use for, are refused
        when set: a run must not quietly differ from what its config.toml says."""
        if not self.adversarial:
            self._refuse_if_set(("adv_eps", "adv_steps", "adv_step_size", "adv_norm"),
                                "configures adversarial querying, which is off (set adversarial)")
        if self.augment is None:
            self._refuse_if_set(("augment_severity", "augment_prob"),
                                "configures corruption augmentation, which is off (set augment)")
        if not self.compile:
            self._refuse_if_set(("compile_mode",),
                                "configures torch.compile, which is off (set compile)")
        if self.rotations and self.dataset != "omniglot":
            raise ValueError(f"rotations: rotated classes are added to Omniglot only; dataset "
                             f"{self.dataset!r}")
        if self.dataset in ("sinusoid", "idx"):
            self._refuse_if_set(("image_size",), f"dataset {self.dataset!r} is not resized")
        if self.dataset == "sinusoid":
            self._refuse_if_set(("split", "val_split"),
                                "sinusoid tasks are drawn, not read from splits")
        from .models.user import OBJECT_PREFIX, is_factory_name

        if self.model is not None and not (is_factory_name(self.model)
                                           or str(self.model).startswith(OBJECT_PREFIX)):
            from .models import MODELS

            if self.model not in MODELS:
                raise ValueError(f"model: expected one of {', '.join(MODELS)} or "
                                 f"'module.path:factory'; got {self.model!r}")
            if (self.model == "mlp_sinusoid") != (self.dataset == "sinusoid"):
                raise ValueError(f"model: {self.model!r} does not take dataset "
                                 f"{self.dataset!r}'s inputs ("
                                 + ("the MLP takes sinusoid's x" if self.model == "mlp_sinusoid"
                                    else "sinusoid needs mlp_sinusoid") + ")")

    __hash__ = None  # type: ignore[assignment]  # mutable: equal configs, not one object

    def __eq__(self, other: object) -> bool:
        """Configs are equal when every field is (resolved or not)."""
        if not isinstance(other, TrainConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def resolved(self) -> ResolvedConfig:
        """A copy with the learner-dependent defaults filled in."""
        maml = self.learner not in EMBEDDING_LEARNERS
        sinusoid = self.dataset == "sinusoid"
        # ProtoNet on Omniglot: the time-budget recipe (ceil-mode pooling, linear decay,
        # Adam 6e-3), tuned on paired test episodes (experiments/figures.md).
        proto_omniglot = self.learner == "protonet" and self.dataset == "omniglot"
        default_model = ("mlp_sinusoid" if sinusoid else "conv4_finn" if maml
                         else "conv4_snell_ceil" if proto_omniglot
                         else "conv4_sung" if self.learner == "relation" else "conv4_snell")
        from .config_defaults import resolved_fields

        return ResolvedConfig(**{
            **self.to_dict(),
            **resolved_fields(self, maml, sinusoid, proto_omniglot, default_model)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Writes TOML atomically (None fields are left out: TOML has no null)."""
        path = Path(path)
        data = {k: v for k, v in self.to_dict().items() if v is not None}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(tomli_w.dumps(data))
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {', '.join(unknown)}")
        return cls(**data).check_types(source)

    @classmethod
    def completed(cls, data: dict[str, Any], resolved: bool = False) -> dict[str, Any]:
        """A saved config's dict (``to_dict``, of a resolved config if ``resolved``) with the
        fields it lacks (options added since it was saved) at their defaults, so that runs
        saved by an earlier version compare equal to the same config today."""
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if not missing:
            return data
        known = {k: v for k, v in data.items() if k in names}
        base = cls(**known).resolved().to_dict() if resolved else cls(**known).to_dict()
        return {**{k: base[k] for k in missing}, **data}

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        path = Path(path)
        return cls.from_dict(read_toml(path, "config"), source=str(path))


def _allowed_types(hint: Any) -> tuple[type, ...]:
    """``int | None`` -> (int, NoneType)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _is_a(value: Any, kind: type) -> bool:
    if kind in (int, float) and isinstance(value, bool):
        return False  # True is not a count or a rate
    return isinstance(value, (int, float) if kind is float else kind)


@dataclass(eq=False)
class ResolvedConfig(TrainConfig):
    """A :class:`TrainConfig` with the learner-dependent defaults filled in
    (:meth:`TrainConfig.resolved`): the fields below are never None."""

    model: str = "conv4_snell"
    image_size: int = 28
    rotations: bool = False
    test_ways: int = 5
    test_shots: int = 1
    test_queries: int = 15
    meta_batch: int = 1
    test_inner_steps: int = 1
    lr: float = 1e-3
    schedule: str = "cosine"
    channels_last: bool = True
    pretrain_share: float = 0.0


def read_toml(path: Path, name: str) -> dict[str, Any]:
    """The table of a TOML file; errors name ``name`` (what the file is for) and the path."""
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no file at {path}")
    try:
        return dict(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{name}: {path} is not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: {path} is not UTF-8 text ({e})") from None
