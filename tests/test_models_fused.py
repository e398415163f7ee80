"""The fused first Conv-4 block (metarobust.models.fused): the same outputs, parameter
gradients and BatchNorm running statistics as torch's block; the cases it leaves to torch;
ProtoNet training with it on and off; bad arguments to the kernels."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import metarobust as mr
from metarobust import _core
from metarobust.learners.base import task_batch_norm
from metarobust.learners.protonet import ProtoNet
from metarobust.models import conv4_snell
from metarobust.models.conv4 import _block
from metarobust.models.fused import fused_pool_block


def block_pair(cin: int, cout: int, seed: int = 0):
    torch.manual_seed(seed)
    ref = _block(cin, cout, 1, True)
    with torch.no_grad():
        ref[1].weight.uniform_(0.5, 1.5)
        ref[1].bias.uniform_(-0.3, 0.3)
    return ref, copy.deepcopy(ref)


def images(n: int, cin: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, cin, h, w, generator=g)
    x[:, :, : h // 3] = 1.0  # flat regions: ties inside the pooling windows, as on glyphs
    return x


@pytest.mark.parametrize("n, cin, h, w, cout", [(7, 1, 28, 28, 16), (3, 3, 9, 11, 8)])
def test_same_as_torch(n, cin, h, w, cout):
    ref, fused = block_pair(cin, cout)
    exact = copy.deepcopy(ref).double()  # the yardstick for the gradients
    x = images(n, cin, h, w)
    for _ in range(2):  # twice: the running statistics accumulate
        want = ref(x)
        got = fused_pool_block(fused, x)
        assert got is not None and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        g = torch.randn_like(want)
        for m in (ref, fused, exact):
            m.zero_grad()
        got.backward(g)
        exact(x.double()).backward(g.double())
        for (name, a), b in zip(fused.named_parameters(), exact.parameters()):
            scale = float(exact[0].weight.grad.abs().max())
            if name == "0.bias":  # zero before a BatchNorm, up to rounding
                assert a.grad.abs().max() <= 1e-5 * scale
                continue
            err = float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max())
            assert err < 2e-5, (name, err)
    for a, b in zip(fused[1].buffers(), ref[1].buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cases_left_to_torch():
    block, _ = block_pair(1, 4)
    x = images(4, 1, 8, 8)
    assert fused_pool_block(block, x.requires_grad_()) is None  # an attack's variable
    x = x.detach()
    assert fused_pool_block(block.eval(), x) is None  # running statistics
    block.train()
    with task_batch_norm(block, 2):  # per-task statistics
        assert fused_pool_block(block, x) is None
    assert fused_pool_block(block, x.double()) is None
    assert fused_pool_block(block, x[:, :, :1]) is None  # too small to pool
    assert fused_pool_block(block, x) is not None


def test_protonet_trains_the_same_with_and_without():
    # Against the same learner in float64: the fused float32 gradients are as close as the
    # unfused float32 ones (torch's own rounding is the yardstick).
    ds = mr.data.glyphs(num_classes=10, per_class=6, image_size=28, seed=2)
    batch = mr.EpisodeSampler(ds, ways=5, shots=1, queries=5, seed=3).sample_batch(0, 1)
    backbone = conv4_snell(in_channels=1, image_size=28)
    learners = [ProtoNet(copy.deepcopy(backbone), channels_last=True, fuse_first_block=f)
                for f in (True, False)]
    exact = ProtoNet(copy.deepcopy(backbone).double(), fuse_first_block=False)
    assert learners[0].backbone.fuse_first_block and not learners[1].backbone.fuse_first_block
    batch64 = type(batch)(*(t.double() if t.is_floating_point() else t for t in
                            (batch.support_x, batch.support_y, batch.query_x, batch.query_y,
                             batch.classes)))
    stats = [learner.train().meta_backward(b, 5)
             for learner, b in zip([*learners, exact], [batch, batch, batch64])]
    loss_err = [abs(st["loss"] - stats[2]["loss"]) for st in stats[:2]]
    assert loss_err[0] <= 2 * loss_err[1] + 1e-5, loss_err
    named = zip(learners[0].named_parameters(), learners[1].parameters(), exact.parameters())
    for (name, fused), plain, ref in named:
        if name.endswith("0.bias"):  # conv biases before BatchNorm: zero up to rounding
            continue
        err_fused = float((fused.grad.double() - ref.grad).abs().max())
        err_plain = float((plain.grad.double() - ref.grad).abs().max())
        scale = float(ref.grad.abs().max())
        assert err_fused <= 2 * err_plain + 1e-5 * scale, (name, err_fused, err_plain, scale)


def test_kernel_bad_arguments():
    x = np.zeros((2, 1, 4, 4), np.float32)
    w = np.zeros((3, 1, 3, 3), np.float32)
    v = np.ones(3, np.float32)
    out = np.zeros((2, 2, 2, 3), np.float32)
    _core.conv_block_forward(x, w, v, v, v, 1e-5, out)
    with pytest.raises(ValueError, match="weight: expected shape"):
        _core.conv_block_forward(x, np.zeros((3, 1, 5, 5), np.float32), v, v, v, 1e-5, out)
    with pytest.raises(ValueError, match="out: expected 24 values"):
        _core.conv_block_forward(x, w, v, v, v, 1e-5, out[:1])
    with pytest.raises(ValueError, match="gamma: expected 3 values"):
        _core.conv_block_forward(x, w, v, v[:2], v, 1e-5, out)
    with pytest.raises(ValueError, match="eps"):
        _core.conv_block_forward(x, w, v, v, v, -1.0, out)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        _core.conv_block_forward(x.astype(np.float64), w, v, v, v, 1e-5, out)
    with pytest.raises(ValueError, match="dout: expected 24 values"):
        _core.conv_block_backward(x, w, v, v, v, v, v, 1e-5, out[:1])
    with pytest.raises(ValueError, match="mean: expected 3 values"):
        _core.conv_block_backward(x, w, v, v, v, v[:2], v, 1e-5, out)
    with pytest.raises(ValueError, match="eps"):
        _core.conv_block_backward(x, w, v, v, v, v, v, float("nan"), out)


def test_same_bits_for_any_thread_count():
    code = (
        "import hashlib, torch\n"
        "from metarobust.models.conv4 import _block\n"
        "from metarobust.models.fused import fused_pool_block\n"
        "torch.manual_seed(0)\n"
        "b = _block(1, 16, 1, True)\n"
        "x = torch.rand(24, 1, 28, 28)\n"
        "out = fused_pool_block(b, x)\n"
        "(out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()\n"
        "h = hashlib.sha256(out.detach().numpy().tobytes())\n"
        "for p in b.parameters():\n"
        "    h.update(p.grad.numpy().tobytes())\n"
        "h.update(b[1].running_var.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=dict(os.environ, RAYON_NUM_THREADS=n)).stdout
        for n in ("1", "2", "3")
    }
    assert len(digests) == 1, digests
