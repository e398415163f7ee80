"""Trainer, checkpoints, evaluation and the train/eval command line, on small glyph runs."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metarobust as mr
from metarobust import seeds
from metarobust.checkpoint import load_checkpoint, save_checkpoint
from metarobust.config import TrainConfig
from metarobust.evaluate import mean_ci95
from metarobust.train import Trainer

TINY = dict(learner="protonet", dataset="glyphs", glyph_classes=30, ways=5, shots=1, queries=3,
            val_every=4, val_episodes=10, test_queries=3, checkpoint_every=3, device="cpu",
            seed=3)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "episodes": 8, **kw})


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.state_dict().values()]


@pytest.mark.parametrize("learner, dataset, lr", [
    ("protonet", "omniglot", 6e-3), ("maml", "omniglot", 1e-3), ("protonet", "glyphs", 1e-3),
    ("maml", "sinusoid", 3e-3),
])
def test_default_learning_rates(learner, dataset, lr):
    cfg = TrainConfig(learner=learner, dataset=dataset, data_root="data").resolved()
    assert cfg.lr == lr
    assert TrainConfig(learner=learner, dataset=dataset, data_root="data",
                       lr=0.02).resolved().lr == 0.02


@pytest.mark.parametrize("learner, dataset, model", [
    ("protonet", "omniglot", "conv4_snell_ceil"), ("protonet", "glyphs", "conv4_snell"),
    ("maml", "omniglot", "conv4_finn"), ("maml", "sinusoid", "mlp_sinusoid"),
])
def test_default_models(learner, dataset, model):
    cfg = TrainConfig(learner=learner, dataset=dataset, data_root="data").resolved()
    assert cfg.model == model
    linear = learner == "protonet" and dataset == "omniglot"
    assert cfg.schedule == ("linear" if linear else "cosine")
    assert TrainConfig(learner=learner, dataset=dataset, data_root="data",
                       model="resnet12").resolved().model == "resnet12"


def test_lr_schedules():
    from metarobust.train import _lr_factor

    for schedule, want in [("linear", [1.0, 0.75, 0.5, 0.0, 0.0]),
                           ("cosine", [1.0, 0.5 + 0.5 ** 1.5, 0.5, 0.0, 0.0]),
                           ("step", [1.0, 0.5, 0.25, 0.0625, 0.0625]),
                           ("constant", [1.0] * 5)]:
        got = [_lr_factor(schedule, p) for p in (0.0, 0.25, 0.5, 1.0, 1.5)]
        assert got == pytest.approx(want), schedule


def test_run_directory_contents_and_load_run(tmp_path):
    result = Trainer(tiny(), tmp_path / "run", progress=False).fit()
    assert result["steps"] == 8 and result["episodes"] == 8
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.toml", "metrics.jsonl", "last.pt",
                                              "best.pt"}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in r for r in lines) and any("loss" in r for r in lines)
    # validations carry the training time so far: time-to-accuracy curves
    clock = [r["seconds"] for r in lines if "val_accuracy" in r]
    assert clock == sorted(clock) and 0 < clock[-1] <= result["seconds"]
    assert TrainConfig.load(run / "config.toml") == tiny().resolved()
    learner = mr.load_run(run)
    assert not learner.training
    ds = mr.data.glyphs(num_classes=10, per_class=5, split="test")
    ep = mr.EpisodeSampler(ds, ways=4, shots=2, queries=3).sample(0)
    logits = learner.predict(ep.support_x, ep.support_y, ep.query_x)
    assert logits.shape == (12, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("learner", ["protonet", "fomaml"])
def test_resume_is_bitwise_identical(tmp_path, learner):
    kw = dict(learner=learner, meta_batch=2, inner_steps=1, model="conv4_finn")
    straight = Trainer(tiny(episodes=12, **kw), tmp_path / "a", progress=False)
    straight.fit()
    Trainer(tiny(episodes=12, **kw), tmp_path / "b", progress=False).fit(stop_at=3)
    resumed = Trainer(tiny(episodes=12, **kw), tmp_path / "b", progress=False)
    resumed.fit()
    assert resumed.step == straight.step == 6
    for a, b in zip(params(straight.learner), params(resumed.learner)):
        assert torch.equal(a, b)


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny(episodes=10, val_every=100), tmp_path / "run", progress=False)
    calls = {"n": 0}
    original = trainer.learner.meta_backward

    def interrupt_at_4(batch, ways, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(batch, ways, **kw)

    monkeypatch.setattr(trainer.learner, "meta_backward", interrupt_at_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    again = Trainer(tiny(episodes=10, val_every=100), tmp_path / "run", progress=False)
    again.fit()
    straight = Trainer(tiny(episodes=10, val_every=100), tmp_path / "ref", progress=False)
    straight.fit()
    for a, b in zip(params(again.learner), params(straight.learner)):
        assert torch.equal(a, b)


def test_cli_ctrl_c_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    from metarobust import cli
    from metarobust.learners.protonet import ProtoNet

    original = ProtoNet.meta_backward
    calls = {"n": 0}

    def interrupt_at_3(self, batch, ways, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch, ways, **kw)

    monkeypatch.setattr(ProtoNet, "meta_backward", interrupt_at_3)
    run = tmp_path / "run"
    code = cli.main(["train", "--learner", "protonet", "--dataset", "glyphs", "--glyph-classes",
                     "30", "--ways", "5", "--shots", "1", "--queries", "3", "--episodes", "10",
                     "--device", "cpu", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 130 and f"{run / 'last.pt'}" in err and "resume" in err
    assert load_checkpoint(run / "last.pt")["step"] == 2


def test_corrupt_and_foreign_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    save_checkpoint({"model": {}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)
    save_checkpoint({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a metarobust checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    run = tmp_path / "run"
    Trainer(tiny(episodes=2), run, progress=False).fit()
    (run / "best.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        mr.load_run(run)


def test_a_failing_final_validation_keeps_the_training(tmp_path, monkeypatch):
    trainer = Trainer(tiny(episodes=5, val_every=4, checkpoint_every=100), tmp_path / "run",
                      progress=False)
    real = trainer.validate

    def validate():
        if trainer.step == 5:
            raise RuntimeError("validation broke")
        return real()

    monkeypatch.setattr(trainer, "validate", validate)
    with pytest.raises(RuntimeError, match="validation broke"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 5


def test_the_largest_seed_validates_and_attacks(tmp_path):
    # validation and the training attacks draw from streams derived from the seed
    top = 2**64 - 1
    trainer = Trainer(tiny(seed=top, episodes=1), tmp_path / "run", progress=False)
    assert trainer.val_sampler.seed == seeds.derive(top, seeds.VALIDATION)
    adv = tiny(seed=top, episodes=2, adversarial=True, adv_steps=1, val_every=10**6)
    assert Trainer(adv, tmp_path / "adv", progress=False).fit()["steps"] == 2


def test_resume_refuses_a_different_config(tmp_path):
    Trainer(tiny(episodes=2), tmp_path / "run", progress=False).fit()
    with pytest.raises(ValueError, match="different config"):
        Trainer(tiny(episodes=4, lr=0.5), tmp_path / "run", progress=False).fit()


@pytest.mark.parametrize("kw, words", [
    (dict(learner="reptile"), "learner: expected one of"),
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
def test_bad_configs(kw, words):
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


def test_ways_above_dataset_classes_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="ways: 40 is more than the 30 classes"):
        Trainer(tiny(ways=40), tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="data_root"):
        Trainer(tiny(dataset="omniglot", data_root=str(tmp_path / "nope")), tmp_path / "r",
                progress=False)


def test_config_toml_round_trip_and_unknown_keys(tmp_path):
    cfg = tiny(minutes=1.5, episodes=None, test_ways=7)
    cfg.save(tmp_path / "c.toml")
    assert TrainConfig.load(tmp_path / "c.toml") == cfg
    (tmp_path / "bad.toml").write_text('learner = "protonet"\nwayz = 5\n')
    with pytest.raises(ValueError, match="unknown keys wayz"):
        TrainConfig.load(tmp_path / "bad.toml")


def test_mean_ci95_against_numpy():
    rng = np.random.default_rng(0)
    v = rng.uniform(size=600)
    mean, ci = mean_ci95(torch.from_numpy(v))
    assert math.isclose(mean, v.mean())
    assert math.isclose(ci, 1.96 * v.std(ddof=1) / math.sqrt(600))
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95(torch.zeros(0))


def test_cli_train_then_eval_prints_json(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "metarobust"]
    train = subprocess.run(cmd + ["train", "--learner", "protonet", "--dataset", "glyphs",
                                  "--glyph-classes", "30", "--ways", "5", "--shots", "1",
                                  "--queries", "3", "--episodes", "4", "--device", "cpu",
                                  "--out", str(run)], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--ways", "5", "--shots", "1", "--episodes",
                               "20", "--device", "cpu"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res["episodes"] == 20 and 0 <= res["accuracy"] <= 1 and res["ci95"] >= 0
    for proto, code in (("filtered_mean", 0), ("mode", 2)):
        ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                                   "--prototype", proto], capture_output=True, text=True)
        assert ev.returncode == code, ev.stderr
    assert "prototype: expected one of" in ev.stderr and "filtered_mean" in ev.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                               "--inner-steps", "3"], capture_output=True, text=True)
    assert ev.returncode == 2 and "inner_steps: only MAML-family runs" in ev.stderr
    for flag in ("--ways", "--shots"):  # 0 used to fall back on the run's setting
        ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", flag, "0"],
                            capture_output=True, text=True)
        assert ev.returncode == 2 and f"{flag[2:]}: must be >= 1, got 0" in ev.stderr
    # A run stopped before its first validation holds only last.pt.
    (run / "best.pt").unlink()
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu"],
                        capture_output=True, text=True)
    assert ev.returncode == 2 and "--checkpoint last" in ev.stderr
    ev = subprocess.run(cmd + ["eval", str(run), "--episodes", "4", "--device", "cpu",
                               "--checkpoint", "last"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["episodes"] == 4
    bad = subprocess.run(cmd + ["train", "--learner", "reptile", "--episodes", "1", "--out",
                                str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "learner: expected one of" in bad.stderr


@pytest.mark.parametrize("learner, option, message", [
    ("maml", dict(prototype="median"), "prototype: a ProtoNet option; 'maml' has no prototypes"),
    ("anil", dict(metric="cosine"), "metric: a ProtoNet option; 'anil' has no prototypes"),
    ("protonet", dict(inner_steps=5), "inner_steps: a MAML option; ProtoNet has no inner"),
    ("protonet", dict(inner_lr=0.1), "inner_lr: a MAML option"),
    ("protonet", dict(test_inner_steps=3), "test_inner_steps: a MAML option"),
    ("protonet", dict(metric="l1"), "metric: expected one of sqeuclidean, cosine; got 'l1'"),
    ("protonet", dict(prototype="mode"), "prototype: expected one of mean, median"),
])
def test_options_of_the_other_learner_family_are_refused(learner, option, message):
    # Silently ignoring them would train something else than the user asked for.
    with pytest.raises(ValueError, match=message):
        tiny(learner=learner, **option).check()
    name, _ = next(iter(option.items()))
    tiny(learner=learner, **{name: TrainConfig.__dataclass_fields__[name].default}).check()
    tiny(learner="protonet", prototype="geometric_median", metric="cosine").check()
    tiny(learner="fomaml", inner_steps=5, inner_lr=0.1, test_inner_steps=3).check()


def test_omniglot_vinyals_split_run(tmp_path, data_root):
    splits = data_root / "omniglot-splits" / "vinyals"
    cfg = TrainConfig(learner="protonet", dataset="omniglot", data_root=str(data_root),
                      split=str(splits / "val.txt"), ways=20, shots=1, queries=2, episodes=3,
                      device="cpu", val_every=100)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.train_set.num_classes == 688
    trainer.fit()
    learner = mr.load_run(tmp_path / "run")
    test = mr.data.omniglot(data_root, split=str(splits / "test.txt"), progress=False)
    assert test.num_classes == 1692
    res = mr.evaluate.evaluate(learner, mr.EpisodeSampler(test, ways=5, shots=1, queries=5),
                               episodes=10, progress=False)
    assert res["episodes"] == 10 and 0.2 <= res["accuracy"] <= 1.0


def test_sinusoid_regression_run_and_eval(tmp_path):
    cfg = TrainConfig(learner="maml", dataset="sinusoid", shots=5, queries=10, meta_batch=5,
                      inner_lr=0.01, episodes=60, val_every=6, val_episodes=20, device="cpu")
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert result["steps"] == 12 and result["best_val_mse"] > 0
    ev = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                         "--shots", "5", "--episodes", "30", "--device", "cpu"],
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    assert set(res["mse_by_steps"]) == {"1", "5", "10"} and res["episodes"] == 30
    assert all(v > 0 for v in res["mse_by_steps"].values())
    bad = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                          "--prototype", "median"], capture_output=True, text=True)
    assert bad.returncode == 2 and "only ProtoNet runs have prototypes" in bad.stderr
    for flags, words in ((["--ways", "7"], "ways: a sinusoid run is evaluated on drawn"),
                         (["--split", "test"], "split: a sinusoid run"),
                         (["--queries", "0"], "queries: must be >= 1, got 0"),
                         (["--inner-steps", "-1"], "inner_steps: must be >= 0, got -1")):
        bad = subprocess.run([sys.executable, "-m", "metarobust", "eval",
                              str(tmp_path / "run"), *flags], capture_output=True, text=True)
        assert bad.returncode == 2 and words in bad.stderr, (flags, bad.stderr)
    ev = subprocess.run([sys.executable, "-m", "metarobust", "eval", str(tmp_path / "run"),
                         "--shots", "5", "--episodes", "30", "--device", "cpu",
                         "--inner-steps", "5"], capture_output=True, text=True)
    res5 = json.loads(ev.stdout.strip().splitlines()[-1])
    assert res5["mse"] == res5["mse_by_steps"]["5"] and "after 5 steps" in ev.stdout
    with pytest.raises(ValueError, match="regression"):
        TrainConfig(learner="protonet", dataset="sinusoid", episodes=1).check()


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


def test_adversarial_querying_trains_on_attacked_queries(tmp_path, monkeypatch):
    import metarobust.train as train_mod

    seen = []
    real = train_mod.adversarial_queries

    def spy(learner, batch, ways, *args, **kw):
        adv = real(learner, batch, ways, *args, **kw)
        seen.append((batch, adv, kw["seed"]))
        return adv

    monkeypatch.setattr(train_mod, "adversarial_queries", spy)
    kw = dict(episodes=3, adv_eps=0.1, adv_steps=2, adv_step_size=0.05)
    adv = Trainer(tiny(adversarial=True, **kw), tmp_path / "adv", progress=False)
    adv.fit()
    assert len(seen) == 3 and len({s for _, _, s in seen}) == 3  # a fresh start each step
    for clean, attacked, _ in seen:
        delta = attacked.query_x - clean.query_x.float() / 255
        assert 0 < float(delta.abs().max()) <= 0.1 + 1e-6
        assert torch.equal(attacked.support_x, clean.support_x.float() / 255)
    natural = Trainer(tiny(episodes=3), tmp_path / "nat", progress=False)
    natural.fit()
    assert any(not torch.equal(a, b) for a, b in zip(params(adv.learner),
                                                     params(natural.learner)))


def test_corruption_augmentation_trains_on_corrupted_episodes(tmp_path, monkeypatch):
    seen = []
    cfg = tiny(augment="gaussian_blur,thin", augment_severity=2, augment_prob=1.0, episodes=3)
    trainer = Trainer(cfg, tmp_path / "aug", progress=False)
    real = trainer.learner.meta_backward
    monkeypatch.setattr(trainer.learner, "meta_backward",
                        lambda batch, ways, **kw: seen.append(batch) or real(batch, ways, **kw))
    trainer.fit()
    assert len(seen) == 3
    aug = mr.robust.Augment("gaussian_blur,thin", 2, 1.0, seed=cfg.seed)
    for i, batch in enumerate(seen):
        clean = trainer.sampler.sample(i)
        name, severity = aug.choice(i)
        items = torch.cat([clean.support_x, clean.query_x]).numpy()
        want = mr.robust.corrupt(items, name, severity, seed=cfg.seed, index=i)
        assert np.array_equal(torch.cat([batch.support_x[0], batch.query_x[0]]).numpy(), want)
    assert TrainConfig.load(tmp_path / "aug" / "config.toml").augment == "gaussian_blur,thin"
    with pytest.raises(ValueError, match="augment: unknown corruption 'blur'"):
        tiny(augment="blur").check()
    with pytest.raises(ValueError, match="augment_prob: expected a probability"):
        tiny(augment="thin", augment_prob=2).check()
    with pytest.raises(ValueError, match="augment: corruption augmentation perturbs images"):
        TrainConfig(learner="maml", dataset="sinusoid", augment="thin", episodes=2).check()


def test_compiled_backbone_trains_like_the_plain_one(tmp_path):
    plain = Trainer(tiny(episodes=2, val_every=100), tmp_path / "plain", progress=False)
    compiled = Trainer(tiny(episodes=2, val_every=100, compile=True), tmp_path / "compiled",
                       progress=False)
    batch = plain.sampler.sample_batch(0, 1)
    grads = []
    for t in (plain, compiled):  # same seed: same initial parameters
        t.learner.zero_grad()
        out = t.learner.meta_backward(batch, 5)
        grads.append([p.grad.clone() for p in t.learner.parameters()])
    compared = 0
    for g_plain, g_compiled in zip(*grads):
        # fused float32 reductions differ in rounding; conv biases before BatchNorm have a
        # zero gradient in exact arithmetic (pure rounding noise): not compared
        if g_plain.norm() > 1e-2:
            assert (g_compiled - g_plain).norm() / g_plain.norm() < 1e-2
            compared += 1
    assert compared >= 12
    assert 0 < out["loss"]
    compiled.fit()
    assert list(compiled.learner.state_dict()) == list(plain.learner.state_dict())
    assert mr.load_run(tmp_path / "compiled").config.compile is True  # loads uncompiled
    with pytest.raises(ValueError, match="compile: torch.compile of the backbone is offered"):
        tiny(learner="fomaml", compile=True).check()
    with pytest.raises(ValueError, match="channels_last: NHWC convolutions are offered for "
                                         "ProtoNet; 'maml' runs NCHW"):
        tiny(learner="maml", channels_last=True).check()
    assert tiny(learner="maml", channels_last=False).resolved().channels_last is False


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_bf16_autocast_trains_on_cpu(tmp_path, learner, monkeypatch):
    # The training steps run under CPU autocast: convolutions output bf16, in MAML's task
    # threads too (autocast is thread-local); ProtoNet's distances stay float32. A step's
    # gradient stays close to float32's.
    import metarobust.learners.protonet as protonet_mod

    kw = dict(learner=learner, val_every=100, meta_batch=None if learner == "protonet" else 4)
    convs, heads = [], []
    real_conv, real_head = torch.nn.functional.conv2d, protonet_mod.ops.prototype_distances

    def conv_spy(*args, **kwargs):
        out = real_conv(*args, **kwargs)
        convs.append(out.dtype)
        return out

    def head_spy(support, labels, query, *args):
        heads.append((support.dtype, query.dtype))
        return real_head(support, labels, query, *args)

    monkeypatch.setattr(torch.nn.functional, "conv2d", conv_spy)
    monkeypatch.setattr(protonet_mod.ops, "prototype_distances", head_spy)
    t = Trainer(tiny(episodes=8, bf16=True, **kw), tmp_path / "run", progress=False)
    t.fit()
    assert torch.bfloat16 in convs  # (validation runs in float32)
    assert set(heads) == ({(torch.float32, torch.float32)} if learner == "protonet" else set())
    assert all(torch.isfinite(p).all() for p in params(t.learner))
    batch = t.sampler.sample_batch(0, 4 if learner != "protonet" else 1)
    grads = {}
    for bf16 in (False, True):
        t.learner.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t.learner.meta_backward(batch, 5)
        grads[bf16] = torch.cat([p.grad.flatten() for p in t.learner.parameters()])
    assert not torch.equal(grads[True], grads[False])
    assert torch.nn.functional.cosine_similarity(grads[True], grads[False], dim=0) > 0.9
