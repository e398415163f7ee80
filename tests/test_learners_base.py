"""The shared learner interface (metarobust.learners.base), through MAML and ProtoNet:
meta_backward with and without a device sync, predict()'s shapes, mode and argument checks,
and the normalize hook with uint8 inputs."""

from __future__ import annotations

import pytest
import torch
from _learners import WAYS, grads, image_batch, tiny_conv_maml

from metarobust.episodes import Episode
from metarobust.learners import MAML, ProtoNet, Task
from metarobust.models import build_model


@pytest.mark.parametrize("make", [
    lambda: tiny_conv_maml("maml", "second", "vmap"),
    lambda: tiny_conv_maml("maml", "second", "threads"),
    lambda: torch.manual_seed(0) and ProtoNet(build_model("conv4_snell", 1, 16,
                                                          filters=3)).double(),
], ids=["maml-vmap", "maml-threads", "protonet"])
def test_meta_backward_without_sync_same_results(make) -> None:
    side = 16 if isinstance(make(), ProtoNet) else 8
    batch = image_batch(side=side)
    outs = []
    for sync in (True, False):
        learner = make()
        outs.append((learner.meta_backward(batch, WAYS, sync=sync), grads(learner)))
    (synced, g_synced), (lazy, g_lazy) = outs
    assert all(isinstance(v, float) for v in synced.values())
    assert synced.keys() == lazy.keys()
    for k, v in lazy.items():
        assert float(v) == pytest.approx(synced[k], rel=1e-12)
    for n in g_synced:
        torch.testing.assert_close(g_lazy[n], g_synced[n], rtol=0, atol=0)
    # only the synchronising call reads the labels on the host to check their range
    bad = image_batch(side=side)
    bad.query_y[0, 0] = WAYS
    with pytest.raises(ValueError, match="query_y"):
        make().meta_backward(bad, WAYS)


def test_predict_shapes_and_errors() -> None:
    torch.manual_seed(0)
    learners = [ProtoNet(build_model("conv4_snell", 1, 16, filters=3)),
                MAML(build_model("conv4_finn", 1, 16, filters=3), inner_steps=1, ways=3)]
    sx, qx = torch.rand(6, 1, 16, 16), torch.rand(4, 1, 16, 16)
    sy = torch.tensor([0, 1, 2, 0, 1, 2])
    for learner in learners:
        learner.train()
        assert learner.predict(sx, sy, qx).shape == (4, 3)
        assert learner.training  # mode restored
        with pytest.raises(ValueError, match=r"cover 0..ways-1.*missing \[1\]"):
            learner.predict(sx, torch.tensor([0, 2, 2, 0, 2, 0]), qx)
        with pytest.raises(ValueError, match="support_y"):
            learner.predict(sx, sy[:5], qx)
        with pytest.raises(ValueError, match="query_x"):
            learner.predict(sx, sy, torch.rand(4, 1, 12, 12))
        with pytest.raises(ValueError, match="support_x, query_x"):
            learner.predict(sx, sy, torch.rand(4, 16, 16))
        with pytest.raises(TypeError, match="support_y"):
            learner.predict(sx, sy.float(), qx)
        with pytest.raises(TypeError, match="query_x"):
            learner.predict(sx, sy, qx.numpy())
    with pytest.raises(ValueError, match="3 outputs.*2-way"):
        learners[1].predict(sx[:4], torch.tensor([0, 1, 0, 1]), qx)


def test_normalize_hook_and_uint8() -> None:
    torch.manual_seed(0)
    backbone = build_model("conv4_snell", 1, 16, filters=3)
    plain = ProtoNet(backbone).eval()
    normed = ProtoNet(backbone, normalize=(0.5, 0.25)).eval()
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (6, 1, 16, 16), generator=g, dtype=torch.uint8)
    q = torch.randint(0, 256, (4, 1, 16, 16), generator=g, dtype=torch.uint8)
    sy = torch.tensor([0, 1, 2, 0, 1, 2])
    sx01, q01 = raw.float() / 255, q.float() / 255
    # predict takes [0, 1] images only: the reference runs the plain learner's batch path
    pre = Task(((sx01 - 0.5) / 0.25)[None], sy[None], ((q01 - 0.5) / 0.25)[None],
               torch.zeros(1, 4, dtype=torch.int64))
    expected = plain.query_logits(pre, 3)[0]
    torch.testing.assert_close(normed.predict(sx01, sy, q01), expected)
    torch.testing.assert_close(normed.predict(raw, sy, q), expected)
    assert "norm_mean" in normed.state_dict()
    with pytest.raises(ValueError, match="normalize"):
        ProtoNet(backbone, normalize=(0.5, 0.0))
    with pytest.raises(ValueError, match="normalize: 3 channel"):
        ProtoNet(backbone, normalize=([0.5] * 3, [0.2] * 3)).predict(sx01, sy, q01)


def test_batches_whose_fields_are_no_tensors_are_named() -> None:
    batch = image_batch()
    for learner in (ProtoNet(build_model("conv4_finn", 1, 8, filters=3)).double(),
                    tiny_conv_maml("maml", "first", "loop")):
        for call in (learner.evaluate_batch, learner.meta_backward, learner.query_logits):
            # MAML read batch.support_x before any check: an AttributeError for None
            with pytest.raises(TypeError, match="^batch: expected an Episode"):
                call(None, WAYS)
            with pytest.raises(TypeError, match="^batch.support_y: expected a torch.Tensor"):
                call(batch._replace(support_y=None), WAYS)


def test_images_of_another_dtype_than_the_learner_are_named() -> None:
    # torch's error: "Input type (c10::BFloat16) and bias type (float) should be the same"
    learner = ProtoNet(build_model("conv4_finn", 1, 8, filters=3))
    batch = image_batch()
    with pytest.raises(TypeError, match="^batch.support_x: torch.float64 images for a "
                                        "learner with torch.float32 parameters"):
        learner.evaluate_batch(batch, WAYS)
    with pytest.raises(TypeError, match="^query_x: torch.bfloat16 images for a learner"):
        learner.predict(batch.support_x[0].float(), batch.support_y[0],
                        batch.query_x[0].bfloat16())
    with pytest.raises(TypeError, match="^support_x: expected float images in \\[0, 1\\] or "
                                        "uint8, got torch.int32"):
        learner.predict(batch.support_x[0].int(), batch.support_y[0], batch.query_x[0].float())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts them: allowed
        learner.predict(batch.support_x[0].float(), batch.support_y[0],
                        batch.query_x[0].bfloat16())


def test_ways_beyond_memory_and_huge_labels_are_named() -> None:
    learner = ProtoNet(build_model("conv4_finn", 1, 8, filters=3)).double()
    # used to reach torch's allocator through one_hot (a RuntimeError)
    for ways in (2**31, 2**64):
        with pytest.raises(ValueError, match=f"^ways: {ways} classes for 6 support items"):
            learner.evaluate_batch(image_batch(), ways)
    # as many support items as classes (views of one image, no memory): the outputs' size
    n, ways = 2**33, 2**31
    one = torch.zeros(1, 1, 1, 8, 8, dtype=torch.float64)
    huge = Episode(support_x=one.expand(1, n, 1, 8, 8),
                   support_y=torch.zeros(1, 1, dtype=torch.long).expand(1, n),
                   query_x=one.expand(1, 2, 1, 8, 8), query_y=torch.zeros(1, 2, dtype=torch.long),
                   classes=torch.zeros(1, 1, dtype=torch.long).expand(1, ways))
    with pytest.raises(ValueError, match=f"^ways: {ways}-way outputs for 1 tasks of {n} "
                                         "support and 2 query items would take"):
        learner.evaluate_batch(huge, ways)
    # predict listed every missing label of range(max + 1): minutes and gigabytes
    sx, qx = torch.rand(3, 1, 8, 8, dtype=torch.float64), torch.rand(2, 1, 8, 8,
                                                                     dtype=torch.float64)
    with pytest.raises(ValueError, match=r"missing \[1, 2, 3, 4, 5, 6, 7, 8, 9, 10\] \.\.\."):
        learner.predict(sx, torch.tensor([0, 2**40, 2**40]), qx)


def test_normalize_values_that_are_no_numbers_are_named() -> None:
    backbone = build_model("conv4_snell", 1, 16, filters=3)
    for bad in (("a", 1.0), (None, 1.0), (0.5, [object()])):
        with pytest.raises(TypeError, match="^normalize: (mean|std) must be one or more real"):
            ProtoNet(backbone, normalize=bad)
