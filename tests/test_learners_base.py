"""The shared learner interface (metarobust.learners.base), through MAML and ProtoNet:
meta_backward with and without a device sync, predict()'s shapes, mode and argument checks,
and the normalize hook with uint8 inputs."""

from __future__ import annotations

import pytest
import torch
from _learners import WAYS, grads, image_batch, tiny_conv_maml

from metarobust.learners import MAML, ProtoNet
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
    expected = plain.predict((sx01 - 0.5) / 0.25, sy, (q01 - 0.5) / 0.25)
    torch.testing.assert_close(normed.predict(sx01, sy, q01), expected)
    torch.testing.assert_close(normed.predict(raw, sy, q), expected)
    assert "norm_mean" in normed.state_dict()
    with pytest.raises(ValueError, match="normalize"):
        ProtoNet(backbone, normalize=(0.5, 0.0))
    with pytest.raises(ValueError, match="normalize: 3 channel"):
        ProtoNet(backbone, normalize=([0.5] * 3, [0.2] * 3)).predict(sx01, sy, q01)
