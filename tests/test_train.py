"""The Trainer (metarobust.train) on small glyph runs: learning-rate schedules, the run
directory and load_run, bitwise resume, Ctrl-C and failing validations, a finished run run
again, the largest seed, resume refusing another config, an Omniglot split-file run,
adversarial querying, corruption augmentation, torch.compile and bf16 autocast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _runs import tiny

import metarobust as mr
from metarobust import seeds
from metarobust.checkpoint import load_checkpoint
from metarobust.config import TrainConfig
from metarobust.train import Trainer


def params(learner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.state_dict().values()]


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
    # not finished: run again, it validates (and only then is it finished)
    again = Trainer(tiny(episodes=5, val_every=4, checkpoint_every=100), tmp_path / "run",
                    progress=False)
    assert again.fit()["steps"] == 5 and not again.already_finished
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 5 and "val_accuracy" in lines[-1]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["finished"]


def test_a_finished_run_run_again_does_nothing(tmp_path, monkeypatch):
    first = Trainer(tiny(episodes=5), tmp_path / "run", progress=False).fit()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    again = Trainer(tiny(episodes=5), tmp_path / "run", progress=False)
    monkeypatch.setattr(again, "validate", lambda: pytest.fail("validated again"))
    result = again.fit()
    assert again.already_finished and result["steps"] == 5
    assert result["best_val_accuracy"] == first["best_val_accuracy"]
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics
    # a longer budget trains on from where the run stopped
    longer = Trainer(tiny(episodes=6), tmp_path / "run", progress=False)
    assert longer.fit()["steps"] == 6 and not longer.already_finished


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


def test_ways_above_dataset_classes_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="ways: 40 is more than the 30 classes"):
        Trainer(tiny(ways=40), tmp_path / "r", progress=False)
    with pytest.raises(FileNotFoundError, match="data_root"):
        Trainer(tiny(dataset="omniglot", data_root=str(tmp_path / "nope")), tmp_path / "r",
                progress=False)


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
