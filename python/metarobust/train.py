"""Meta-training: datasets and learners from a :class:`TrainConfig`, the training loop with
validation, resumable checkpoints and metrics, and :func:`load_run`.

A run directory holds ``config.toml`` (the full resolved config), ``metrics.jsonl`` (one
JSON object per logged step or validation; a validation's ``seconds`` is the training time
so far, for time-to-accuracy), ``last.pt`` (resumable: model, optimiser, step,
RNG state), ``best.pt`` (the best validation accuracy, or the final model without
validation) and, with ``tensorboard``, ``tensorboard/`` (the same records as event files;
see :mod:`metarobust.callbacks`). Episodes come from the counter-based sampler by position,
so a resumed run sees exactly the episodes an uninterrupted one would; a finished run run
again does nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import data as mrdata
from . import run_inputs, seeds
from .callbacks import Callback, MetricsWriter, TensorBoardWriter
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ResolvedConfig, TrainConfig
from .distributed import Distributed
from .episodes import EpisodeSampler
from .evaluate import evaluate, evaluate_regression
from .learners import Learner, ProtoNet
from .pretrain import Pretraining
from .robust.attacks import adversarial_queries
from .robust.certify import noisy_images
from .robust.corruptions import Augment
from .robust.meta_objectives import check_objective, meta_objective
from .task_batches import TaskBatches

MAML_VARIANTS = run_inputs.MAML_VARIANTS
# the dataset of a config for a split (re-exported: the commands and tests read it here)
load_dataset = run_inputs.load_dataset
resolve_device = run_inputs.resolve_device


def build_learner(cfg: ResolvedConfig, in_channels: int, model: Any = None) -> Learner:
    """The learner of a resolved config, around the backbone object ``model`` if given (else
    the one ``cfg.model`` names: see :func:`metarobust.run_inputs.backbone`)."""
    return run_inputs.learner(cfg, in_channels, model)


def build_optimizer(learner: Learner, lr: float, device: torch.device,
                    extra: Sequence[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam over the learner's parameters and ``extra`` ones (a pre-training head), or plain
    SGD for a learner whose meta-update is an interpolation written into ``.grad``
    (Reptile: its ``outer_optimizer``)."""
    if getattr(learner, "outer_optimizer", "adam") == "sgd":
        return torch.optim.SGD(learner.parameters(), lr=lr)
    # fused: one kernel over all parameters instead of one per tensor
    return torch.optim.Adam([*learner.parameters(), *extra], lr=lr,
                            fused=device.type in ("cpu", "cuda"))


def _lr_factor(schedule: str, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "step":
        return 0.5 ** int(progress * 4)  # halves at 25%, 50%, 75%
    return 1.0


class Trainer:
    """Runs ``cfg`` into ``out``; resumes from ``out/last.pt`` when it exists.

    Under ``torchrun`` with several processes it trains data-parallel (see
    :mod:`metarobust.distributed`): ``meta_batch`` is the global batch, split over the ranks.
    ``callbacks`` (:class:`metarobust.callbacks.Callback`) receive the training and
    validation records after the trainer's own writers.

    Data and a backbone of one's own: ``dataset`` (and ``val_dataset``, validation
    episodes; none without it) an :class:`~metarobust.data.ImageDataset` or ``(images,
    labels)`` arrays of ``image_size`` square images, replacing the config's dataset;
    ``model`` an ``nn.Module`` backbone mapping images to features, trained in place
    (config.toml records its class; :func:`load_run` then needs a new one, ``model=``).

    >>> Trainer(TrainConfig(steps=1000), "runs/glyphs").fit()  # doctest: +SKIP
    >>> Trainer(TrainConfig(steps=1000), "runs/own", dataset=(x, y), model=net)  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, progress: bool = True,
                 callbacks: Sequence[Callback] = (), *, dataset: Any = None, model: Any = None,
                 val_dataset: Any = None) -> None:
        if model is not None:
            cfg = dataclasses.replace(cfg, model=run_inputs.object_record(cfg, model))
        if dataset is not None and cfg.image_size is None and cfg.dataset != "sinusoid":
            cfg = dataclasses.replace(cfg, image_size=run_inputs.image_side(dataset))
        self.cfg: ResolvedConfig = cfg.check().resolved()
        self.out = Path(out)
        self.progress = progress
        self.device = resolve_device(self.cfg.device)
        # several torchrun processes: a process group on cuda:LOCAL_RANK or gloo (else None)
        share = self.cfg.pretrain_share
        self.dist = Distributed.from_env(self.device, self.cfg.meta_batch if share < 1 else None,
                                         batch_size=self.cfg.batch_size if share else None)
        self.is_main = self.dist is None or self.dist.is_main
        if self.dist is not None:
            self.device = self.dist.device
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        self.regression = self.cfg.dataset == "sinusoid"
        # EpisodeSamplers (SinusoidTasks for regression); no validation sampler: None
        self.train_set, self.sampler, self.val_sampler = self._samplers(dataset, val_dataset)
        torch.manual_seed(self.cfg.seed)
        channels = 1 if self.regression else self.train_set.images.shape[1]
        self.learner: Learner = build_learner(self.cfg, channels, model).to(self.device)
        if self.cfg.adversarial and self.cfg.adv_method != "aq":
            check_objective(self.learner, self.cfg.adv_method, self.cfg.adv_inner)
        if self.cfg.compile and isinstance(self.learner, ProtoNet):  # the config's check
            # in place: state_dict keys stay those of the plain module
            self.learner.backbone.compile(mode=self.cfg.compile_mode)
        # the classifier pre-training stage (pretrain.py), None without one
        self.pretraining = None if not share or self.train_set is None else Pretraining(
            self.learner, self.train_set.images, self.train_set.labels,
            self.train_set.num_classes, self.cfg.batch_size, self.cfg.seed, self.device)
        head = [] if self.pretraining is None else list(self.pretraining.head.parameters())
        self.optimizer = build_optimizer(self.learner, self.cfg.lr, self.device, head)
        self.step, self.elapsed, self.pretrain_steps = 0, 0.0, 0
        self._episodes: Any = None
        self.best: float | None = None
        self.total_steps = self.cfg.steps or (math.ceil(self.cfg.episodes / self.cfg.meta_batch)
                                              if self.cfg.episodes else None)
        # finished: the run reached its budget and was validated (a re-run does nothing)
        self.finished = self.already_finished = False
        self.callbacks: list[Callback] = [MetricsWriter(self.out / "metrics.jsonl")]
        if self.cfg.tensorboard:
            self.callbacks.append(TensorBoardWriter(self.out / "tensorboard"))
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks: expected metarobust.callbacks.Callback instances, "
                                f"got {callback!r} ({type(callback).__name__})")
            self.callbacks.append(callback)

    def _samplers(self, dataset: Any, val_dataset: Any) -> tuple[Any, Any, Any]:
        """The training set (None for regression), its sampler and the validation sampler
        (None without validation), seeded as :mod:`metarobust.seeds` says."""
        cfg = self.cfg
        val_seed = seeds.derive(cfg.seed, seeds.VALIDATION)
        train_set, val_set = run_inputs.datasets(cfg, dataset, val_dataset, load_dataset)
        if self.regression:
            return (None, mrdata.sinusoid(cfg.shots, cfg.queries, cfg.seed),
                    mrdata.sinusoid(cfg.test_shots, cfg.test_queries or 10, val_seed))
        sampler = EpisodeSampler(train_set, ways=cfg.ways, shots=cfg.shots,
                                 queries=cfg.queries, seed=cfg.seed, dtype="uint8")
        if val_set is None:
            return train_set, sampler, None
        where = ("validation episodes" if val_dataset is not None
                 else f"validation episodes, split {cfg.val_split or 'val'!r}")
        try:
            return train_set, sampler, EpisodeSampler(
                val_set, ways=cfg.test_ways, shots=cfg.test_shots, queries=cfg.test_queries,
                seed=val_seed, dtype="uint8")
        except ValueError as e:  # the sampler's names are those of the validation options
            head, colon, rest = str(e).partition(":")
            head = re.sub(r"\b(ways|shots|queries)\b", r"test_\1", head)
            raise ValueError(f"{head}{colon}{rest} ({where})") from None

    # -- state ------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"model": self.learner.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "elapsed": self.elapsed, "best": self.best,
                "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict(),
                "finished": self.finished, "pretrain_steps": self.pretrain_steps,
                **({} if self.pretraining is None
                   else {"pretrain_head": self.pretraining.head.state_dict()})}

    def _resume(self) -> None:
        last = self.out / "last.pt"
        if self.dist is not None:  # rank 0 reads it; every rank gets the same state
            state = self.dist.run_on_main(lambda: load_checkpoint(last) if last.exists()
                                          else None)
        else:
            state = load_checkpoint(last, map_location=self.device) if last.exists() else None
        if state is None:
            return
        free = ("steps", "episodes", "minutes", "log_every", "tensorboard")  # may change
        saved = {k: v for k, v in TrainConfig.completed(state["config"], resolved=True).items()
                 if k not in free}
        mine = {k: v for k, v in self.cfg.to_dict().items() if k not in free}
        if saved != mine:
            diff = sorted(k for k in mine if saved.get(k) != mine[k])
            raise ValueError(f"out: {self.out} holds a run with a different config "
                             f"({', '.join(diff)}); use another --out")
        self.learner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.best = state["step"], state["elapsed"], state["best"]
        self.finished = bool(state.get("finished", False))
        self.pretrain_steps = int(state.get("pretrain_steps", 0))
        if self.pretraining is not None:
            self.pretraining.head.load_state_dict(state["pretrain_head"])
        torch.set_rng_state(state["torch_rng"].cpu())

    def _save(self, name: str) -> None:
        if self.is_main:  # rank 0 writes the checkpoints of a distributed run
            save_checkpoint(self._state(), self.out / name)

    def _emit(self, event: str, *args: Any) -> None:
        """Calls ``event`` (on_step, on_validate, on_end) of every callback (rank 0)."""
        if self.is_main:
            for callback in self.callbacks:
                getattr(callback, event)(self, *args)

    def _progress_fraction(self) -> float:
        if self.total_steps:
            return self.step / self.total_steps
        return self.elapsed / (60 * (self.cfg.minutes or math.inf))  # minutes is set here

    def _done(self) -> bool:
        if self.total_steps is not None and self.step >= self.total_steps:
            return True
        return self.cfg.minutes is not None and self.elapsed >= 60 * self.cfg.minutes

    def _drain(self) -> None:
        """Waits for the training steps still queued on the GPU, counting the wait as
        training time (steps do not read their results on the host; see ``fit``)."""
        if self.device.type == "cuda" and self.dist is None:  # ranks read each step
            t0 = time.perf_counter()
            torch.cuda.synchronize(self.device)
            self.elapsed += time.perf_counter() - t0

    def validate(self) -> float | None:
        """Validation score (accuracy, or minus the MSE for regression); keeps ``best.pt``."""
        if self.val_sampler is None or not self.is_main:  # rank 0 validates
            return None
        if self.regression:
            res = evaluate_regression(self.learner, self.val_sampler, self.cfg.val_episodes,
                                      device=self.device, steps=())
            score = -res["mse"]
            self._emit("on_validate", {"step": self.step, "val_mse": res["mse"],
                                       "val_ci95": res["ci95"], "seconds": self.elapsed})
        else:
            res = evaluate(self.learner, self.val_sampler, self.cfg.val_episodes,
                           device=self.device, progress=False)
            score = res["accuracy"]
            self._emit("on_validate", {"step": self.step, "val_accuracy": score,
                                       "val_ci95": res["ci95"], "seconds": self.elapsed})
        if self.best is None or score > self.best:
            self.best = score
            self._save("best.pt")
        return score

    # -- loop -------------------------------------------------------------------------

    def _augment(self) -> Augment | None:
        cfg = self.cfg
        if cfg.augment is None:
            return None
        ink = "light" if cfg.dataset == "idx" else "dark"
        return Augment(cfg.augment, cfg.augment_severity, cfg.augment_prob, seed=cfg.seed,
                       ink=ink)

    def _batches(self) -> Any:
        """The training batches from the current step on; a rank takes its slice of each
        global batch."""
        mb = self.cfg.meta_batch
        local, first = mb, self.step * mb
        if self.dist is not None:
            local, first = self.dist.local_batch(mb), self.dist.first_episode(self.step, mb)
        if self.regression:
            return TaskBatches(self.sampler, local, start=first, stride=mb)
        return self.sampler.batches(local, start=first, prefetch=2, stride=mb,
                                    pin_memory=self.device.type == "cuda",
                                    transform=self._augment())

    def _pretraining_now(self) -> bool:
        """Whether the next step is a pre-training one (the first ``pretrain_share`` of the
        budget: of the steps, or of the minutes)."""
        share = self.cfg.pretrain_share
        if self.pretraining is None or share >= 1:
            return self.pretraining is not None
        if self.total_steps:
            return self.step < math.ceil(share * self.total_steps)
        return self._progress_fraction() < share

    def _phase_progress(self, pretraining: bool) -> float:
        """Progress within the current stage (each stage runs its own lr schedule)."""
        p, share = self._progress_fraction(), self.cfg.pretrain_share
        if not share:
            return p
        return p / share if pretraining else (p - share) / (1 - share)

    def _pretrain_step(self) -> dict[str, Any]:
        """One pre-training step's backward (this rank's slice of the global batch)."""
        cfg, pre = self.cfg, self.pretraining
        assert pre is not None
        start, count = 0, cfg.batch_size
        if self.dist is not None:
            count = self.dist.local_batch(cfg.batch_size)
            start = self.dist.rank * count
        x, y = pre.batch(self.pretrain_steps, start, count)
        noise = None if cfg.noise_train is None else (
            cfg.noise_train, seeds.derive(cfg.seed, seeds.NOISE_TRAINING, self.step))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            if self.dist is None:
                return pre.backward(x, y, noise)
            return self.dist.synchronised_backward(
                self.learner, lambda: pre.backward(x, y, noise), pre.head.parameters())

    def _train_step(self) -> tuple[dict[str, Any], float]:
        """One optimiser step; returns the step's statistics (on the device) and its lr."""
        cfg = self.cfg
        t0 = time.perf_counter()
        pretraining = self._pretraining_now()
        lr = cfg.lr * _lr_factor(cfg.schedule, self._phase_progress(pretraining))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if pretraining:
            stats = self._pretrain_step()
            self.pretrain_steps += 1
        else:
            stats = self._meta_step()
        self.optimizer.step()
        self.step += 1
        dt = time.perf_counter() - t0
        if self.dist is not None and cfg.minutes is not None:
            dt = self.dist.agree(dt)  # rank 0's clock: all ranks stop at one step
        self.elapsed += dt
        return stats, lr

    def _meta_step(self) -> dict[str, Any]:
        """One episodic step's backward. The episode stream starts at the first episodic
        step of this process (after the pre-training stage: a resumed run reads the same
        episodes as an uninterrupted one whatever the stage's length)."""
        cfg = self.cfg
        if self._episodes is None:
            self._episodes = self._batches()
        batch = next(self._episodes).to(self.device, non_blocking=True)
        ways = None if self.regression else cfg.ways
        objective = None  # TRADES / ADML: the step's backward (robust.meta_objectives)
        if cfg.adversarial:
            seed = seeds.derive(cfg.seed, seeds.ADVERSARIAL_TRAINING, self.step)
            if cfg.adv_method == "aq":
                batch = adversarial_queries(self.learner, batch, cfg.ways, cfg.adv_eps,
                                            cfg.adv_steps, cfg.adv_step_size, cfg.adv_norm,
                                            seed=seed)
            else:
                objective = meta_objective(cfg.adv_method, cfg.adv_eps, cfg.adv_steps,
                                           cfg.adv_step_size, cfg.adv_norm,
                                           beta=cfg.trades_beta, inner=cfg.adv_inner, seed=seed)
        if cfg.noise_train is not None:
            batch = noisy_images(batch, cfg.noise_train,
                                  seeds.derive(cfg.seed, seeds.NOISE_TRAINING, self.step))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            # sync=False: no host read inside the step (the sampler's labels are in range),
            # so a GPU step queues while the previous one still runs
            if objective is not None:
                run = functools.partial(objective, self.learner, batch, cfg.ways)
                return run() if self.dist is None else \
                    self.dist.synchronised_backward(self.learner, run)
            return (self.learner.meta_backward(batch, ways, sync=False) if self.dist is None
                    else self.dist.meta_backward(self.learner, batch, ways))

    def _log_step(self, stats: dict[str, Any], lr: float, window: tuple[int, float],
                  bar: Any) -> tuple[dict[str, float], tuple[int, float]]:
        """Reads the step's statistics on the host and logs them with the episodes/s (the
        pre-training stage: images/s) since the last log (``window``: its step and time)."""
        self._drain()
        host = {k: float(v) for k, v in stats.items()}
        pretraining = self.pretrain_steps == self.step and self.pretraining is not None
        per_step, unit = ((self.cfg.batch_size, "images_per_s") if pretraining
                          else (self.cfg.meta_batch, "episodes_per_s"))
        rate = per_step * (self.step - window[0]) / (self.elapsed - window[1])
        self._emit("on_step", {"step": self.step, "lr": lr, unit: rate, **host})
        bar.set_postfix(loss=f"{host['loss']:.3f}", eps=f"{rate:.0f}/s")
        return host, (self.step, self.elapsed)

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Trains until ``steps``, ``episodes`` or ``minutes`` is reached (or step
        ``stop_at``, leaving a resumable ``last.pt``); Ctrl-C saves ``last.pt`` too. A run
        that already finished (in ``out``, with this budget) is left as it is:
        ``already_finished`` is set and its result returned, without a validation or a
        metrics line."""
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._resume()
        if self.finished and self._done():
            self.already_finished = True
            result = self._result({})
            self._emit("on_end", result)
            return result
        self.finished = False
        if self.is_main:
            self.cfg.save(self.out / "config.toml")
        if self.dist is not None:
            self.dist.broadcast_module(self.learner)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.cfg.learner}",
                   unit="step", disable=None if self.progress and self.is_main else True)
        self._episodes = None  # the episodic batches, opened at the first episodic step
        try:
            try:
                last = self._loop(bar, stop_at)
            except KeyboardInterrupt:
                self._save("last.pt")
                raise
            finally:
                bar.close()
                if self._episodes is not None:
                    self._episodes.close()
            result = self._finish(last)
        except BaseException:
            self._emit("on_end", None)
            raise
        self._emit("on_end", result)
        return result

    def _loop(self, bar: Any, stop_at: int | None) -> dict[str, Any]:
        """The training steps, validations and checkpoints; the last logged statistics."""
        cfg = self.cfg
        last: dict[str, Any] = {}
        window = (self.step, self.elapsed)  # episodes/s over the steps since the last log
        while not self._done() and (stop_at is None or self.step < stop_at):
            last, lr = self._train_step()
            if self.step % cfg.log_every == 0 or self.step == 1:  # the host reads the step
                last, window = self._log_step(last, lr, window, bar)
            bar.update(1)
            if self.step % cfg.val_every == 0:
                self._drain()
                self.validate()
            if self.step % cfg.checkpoint_every == 0:
                self._drain()
                self._save("last.pt")
        self._drain()
        return last

    def _finish(self, last: dict[str, Any]) -> dict[str, Any]:
        """The final validation and checkpoints; the run's result."""
        finished = self._done()
        if (finished and self.val_sampler is not None
                and self.step % self.cfg.val_every != 0):
            self._save("last.pt")  # the training is kept should the validation fail
            self.validate()
        self.finished = finished
        self._save("last.pt")
        if finished and not (self.out / "best.pt").exists():
            self._save("best.pt")
        return self._result(last)

    def _result(self, last: dict[str, Any]) -> dict[str, Any]:
        if self.dist is not None:  # after rank 0's files; every rank returns rank 0's result
            self.best, self.elapsed = self.dist.run_on_main(lambda: (self.best, self.elapsed))
        best = {"best_val_mse": -self.best if self.best is not None else None} \
            if self.regression else {"best_val_accuracy": self.best}
        stage = {} if self.pretraining is None else {"pretrain_steps": self.pretrain_steps}
        return {"steps": self.step,
                "episodes": (self.step - self.pretrain_steps) * self.cfg.meta_batch, **stage,
                "seconds": self.elapsed, **best, **{k: float(v) for k, v in last.items()}}


def load_run(run_dir: str | os.PathLike, which: str = "best", *, model: Any = None) -> Learner:
    """The trained learner of a ``metarobust train`` run (``best.pt`` or ``last.pt``), in
    eval mode on the CPU. ``learner.predict(support_x, support_y, query_x)`` takes images as
    the sampler's float32 output in [0, 1]. ``model``: a new backbone object of the run's
    architecture, for a run trained with a backbone object (``Trainer(..., model=...)``)."""
    run = Path(run_dir)
    cfg = TrainConfig.load(run / "config.toml").resolved()
    path = run / f"{which}.pt"
    if which not in ("best", "last"):
        raise ValueError(f"which: expected 'best' or 'last', got {which!r}")
    if which == "best" and not path.is_file() and (run / "last.pt").is_file():
        raise FileNotFoundError(
            f"checkpoint: no best.pt in {run} (the run stopped before its first validation "
            "and before its end); its latest state is last.pt: load_run(run_dir, 'last'), "
            "or metarobust eval --checkpoint last")
    state = load_checkpoint(path)
    in_channels = _in_channels(state["model"])
    learner = build_learner(cfg, in_channels, model)
    learner.load_state_dict(state["model"])
    learner.config = cfg
    return learner.eval()


def _in_channels(model_state: dict[str, torch.Tensor]) -> int:
    """Input channels of the first convolution in a saved state dict (1 for MLPs)."""
    for value in model_state.values():
        if value.dim() == 4:
            return int(value.shape[1])
    return 1
