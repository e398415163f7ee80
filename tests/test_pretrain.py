"""Classifier pre-training, the trainer's first stage: its head against plain formulas, its
batches (each image once per epoch, the same by position, rank slices of one global batch),
its step against a hand-written cross-entropy backward, and the trainer around it (stage
split, resume, options)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarobust.checkpoint import load_checkpoint
from metarobust.config import TrainConfig
from metarobust.learners import ProtoNet
from metarobust.models import build_model
from metarobust.pretrain import ClassifierHead, Pretraining
from metarobust.train import Trainer

GLYPHS = dict(learner="protonet", dataset="glyphs", glyph_classes=30, device="cpu",
              threads=1, val_episodes=10, test_queries=3, queries=3, log_every=1)


@pytest.fixture
def learner():
    torch.manual_seed(0)
    return ProtoNet(build_model("conv4_snell", 1, 28))


def data(n=50, classes=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8),
            rng.integers(0, classes, n).astype(np.int64))


def test_linear_head_is_an_affine_map():
    head = ClassifierHead(6, 4, "linear")
    f = torch.randn(5, 6)
    torch.testing.assert_close(head(f), f @ head.linear.weight.t() + head.linear.bias)


@pytest.mark.parametrize("classes, scale", [(4, 2.0), (300, 10.0)])
def test_cosine_head_is_a_scaled_cosine(classes, scale):
    head = ClassifierHead(6, classes, "cosine")
    f = torch.randn(5, 6)
    want = scale * F.cosine_similarity(f[:, None, :], head.linear.weight[None], dim=-1)
    torch.testing.assert_close(head(f), want)
    assert head.linear.bias is None


def test_head_kind_is_checked():
    with pytest.raises(ValueError, match=r"kind: expected one of linear, cosine, got 'svm'"):
        ClassifierHead(6, 4, "svm")


def test_each_epoch_visits_every_image_once(learner):
    x, y = data(50)
    pre = Pretraining(learner, x, y, 7, batch_size=16, seed=3, device=torch.device("cpu"))
    # 50 images, 16 per step: steps 0..2 and the first 2 of step 3 are epoch 0
    epoch0 = np.concatenate([pre.indices(s) for s in range(3)] + [pre.indices(3)[:2]])
    assert sorted(epoch0.tolist()) == list(range(50))
    epoch1 = np.concatenate([pre.indices(3)[2:]] + [pre.indices(s) for s in range(4, 7)])
    assert sorted(epoch1[:50].tolist()) == list(range(50))
    assert not np.array_equal(epoch0, epoch1[:50])  # a new permutation
    # by position: a fresh stage (a resumed run) reads the same batches
    again = Pretraining(learner, x, y, 7, batch_size=16, seed=3, device=torch.device("cpu"))
    assert np.array_equal(again.indices(5), pre.indices(5))
    other = Pretraining(learner, x, y, 7, batch_size=16, seed=4, device=torch.device("cpu"))
    assert not np.array_equal(other.indices(0), pre.indices(0))


def test_rank_slices_make_up_the_global_batch(learner):
    x, y = data(50)
    pre = Pretraining(learner, x, y, 7, batch_size=16, seed=0, device=torch.device("cpu"))
    whole = pre.indices(4)
    assert np.array_equal(np.concatenate([pre.indices(4, 0, 8), pre.indices(4, 8, 8)]), whole)
    xb, yb = pre.batch(4, 8, 8)
    assert torch.equal(xb, torch.from_numpy(x[whole[8:]]))
    assert torch.equal(yb, torch.from_numpy(y[whole[8:]]))


def test_backward_is_the_cross_entropy_of_the_head_on_the_embeddings(learner):
    x, y = data(20)
    pre = Pretraining(learner, x, y, 7, batch_size=20, seed=0, device=torch.device("cpu"))
    xb, yb = pre.batch(0)
    stats = pre.backward(xb, yb)
    got = {n: p.grad.clone() for n, p in learner.named_parameters()}
    head_grad = pre.head.linear.weight.grad.clone()
    # the reference: the backbone on x / 255 (ProtoNet's normalisation), then the head
    learner.zero_grad()
    pre.head.zero_grad()
    feats = learner.backbone(xb.float() / 255).flatten(1)
    logits = feats @ pre.head.linear.weight.t() + pre.head.linear.bias
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    assert float(stats["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert float(stats["accuracy"]) == pytest.approx(
        float((logits.argmax(1) == yb).float().mean()))
    for n, p in learner.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    torch.testing.assert_close(head_grad, pre.head.linear.weight.grad, rtol=1e-4, atol=1e-6)


def test_the_head_size_comes_from_the_backbone(learner):
    x, y = data(10)
    pre = Pretraining(learner, x, y, 7, batch_size=4, seed=0, device=torch.device("cpu"))
    assert tuple(pre.head.linear.weight.shape) == (7, 64)
    assert learner.training  # the probe restored the mode


def test_a_learner_without_embed_is_refused():
    x, y = data(10)
    with pytest.raises(TypeError, match="learner: classifier pre-training needs embed"):
        Pretraining(torch.nn.Linear(3, 3), x, y, 7, batch_size=4, seed=0,
                    device=torch.device("cpu"))


@pytest.mark.parametrize("share, pre_steps", [(1.0, 12), (0.5, 6), (0.25, 3)])
def test_the_budget_is_split_between_the_stages(tmp_path, share, pre_steps):
    cfg = TrainConfig(**GLYPHS, steps=12, pretrain_share=share, batch_size=16, val_every=6)
    result = Trainer(cfg, tmp_path, progress=False).fit()
    assert result["steps"] == 12 and result["pretrain_steps"] == pre_steps
    assert result["episodes"] == 12 - pre_steps
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "lr" in x]
    assert [("images_per_s" in x) for x in steps] == [s <= pre_steps for s in range(1, 13)]
    assert all(np.isfinite(x["loss"]) for x in steps)
    # each stage runs its own schedule from the full lr (cosine)
    assert steps[0]["lr"] == pytest.approx(1e-3)
    if share < 1:
        assert steps[pre_steps]["lr"] == pytest.approx(1e-3)
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["pretrain_steps"] == pre_steps and "pretrain_head" in saved
    assert not any(k.startswith("pretrain") for k in load_checkpoint(
        tmp_path / "best.pt")["model"])


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    cfg = dict(GLYPHS, steps=8, pretrain_share=0.5, batch_size=8, val_every=100,
               checkpoint_every=100)
    whole = Trainer(TrainConfig(**cfg), tmp_path / "whole", progress=False)
    whole.fit()
    part = Trainer(TrainConfig(**cfg), tmp_path / "part", progress=False)
    part.fit(stop_at=3)  # inside the pre-training stage
    resumed = Trainer(TrainConfig(**cfg), tmp_path / "part", progress=False)
    resumed.fit()
    assert resumed.pretrain_steps == whole.pretrain_steps == 4
    for (name, a), b in zip(whole.learner.state_dict().items(),
                            resumed.learner.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    for a, b in zip(whole.pretraining.head.parameters(),
                    resumed.pretraining.head.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_pretraining_learns_features_that_transfer(tmp_path):
    """ProtoNet on held-out glyph classes after classifier pre-training alone beats the same
    backbone untrained, on the same validation episodes."""
    cfg = dict(GLYPHS, glyph_classes=60, steps=60, batch_size=64, val_every=1000,
               val_episodes=100, lr=3e-3)
    (tmp_path / "u").mkdir()
    untrained = Trainer(TrainConfig(**cfg, pretrain_share=1.0), tmp_path / "u",
                        progress=False)
    before = untrained.validate()
    trained = Trainer(TrainConfig(**cfg, pretrain_share=1.0), tmp_path / "t", progress=False)
    after = trained.fit()["best_val_accuracy"]
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("fields, message", [
    (dict(pretrain_share=1.5), r"pretrain_share: must be in \[0, 1\].*got 1.5"),
    (dict(pretrain_share=float("nan")), r"pretrain_share: must be in \[0, 1\]"),
    (dict(learner="maml", pretrain_share=0.5), r"pretrain_share: .*'maml' has an inner loop"),
    (dict(batch_size=0, pretrain_share=0.5), r"batch_size: must be >= 1.*got 0"),
    (dict(batch_size=64), r"batch_size: configures classifier pre-training, which is off"),
    (dict(pretrain_share=1.0, adversarial=True),
     r"adversarial: adversarial querying perturbs training episodes; with pretrain_share 1"),
    (dict(pretrain_share=1.0, augment="gaussian_noise"),
     r"augment: corruption augmentation perturbs training episodes"),
])
def test_bad_pretraining_options_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**GLYPHS, "steps": 5, **fields}).check()


def test_pretrain_share_type_is_checked():
    with pytest.raises(TypeError, match="pretrain_share: expected float or None"):
        TrainConfig(**GLYPHS, steps=5, pretrain_share="half").check()


def test_a_run_saved_before_the_pretraining_options_resumes(tmp_path):
    """A run directory whose saved config lacks the options added with pre-training (an
    earlier version wrote it) resumes as the same config, and a finished one is left."""
    cfg = TrainConfig(**GLYPHS, steps=4, val_every=100)
    first = Trainer(cfg, tmp_path, progress=False)
    first.fit(stop_at=2)
    state = load_checkpoint(tmp_path / "last.pt")
    for name in ("pretrain_share", "batch_size"):
        del state["config"][name]
    torch.save(state, tmp_path / "last.pt")
    assert TrainConfig.completed(state["config"], resolved=True) == cfg.resolved().to_dict()
    assert Trainer(cfg, tmp_path, progress=False).fit()["steps"] == 4
    # a different config is still refused
    with pytest.raises(ValueError, match=r"different config \(seed\)"):
        Trainer(TrainConfig(**{**GLYPHS, "seed": 1}, steps=4, val_every=100), tmp_path,
                progress=False).fit()


def test_completed_leaves_a_current_dict_alone():
    data = TrainConfig(**GLYPHS, steps=3).to_dict()
    assert TrainConfig.completed(data) is data
    old = {k: v for k, v in data.items() if k != "batch_size"}
    assert TrainConfig.completed(old) == data
