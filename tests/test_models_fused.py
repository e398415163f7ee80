"""The fused first Conv-4 blocks (metarobust.models.fused), pooling and strided: the same
outputs, parameter gradients and BatchNorm running statistics as torch's blocks; the cases
they leave to torch; differentiable once, never silently twice; ProtoNet and MAML training
with them on and off; bad arguments to the kernels."""

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
from metarobust.learners import MAML, Task
from metarobust.learners.base import task_batch_norm
from metarobust.learners.protonet import ProtoNet
from metarobust.models import conv4_finn, conv4_snell, fused
from metarobust.models.conv4 import _block
from metarobust.models.fused import fused_pool_block, fused_strided_block


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


def check_same_as_torch(ref: torch.nn.Module, fb: torch.nn.Module, fused_fn,
                        x: torch.Tensor, layout: torch.memory_format) -> None:
    """``fused_fn(fb, x)`` against torch's ``ref(x)``: outputs and their memory ``layout``,
    parameter gradients against a float64 copy (closer than 2e-5 relative), and running
    statistics after two steps."""
    exact = copy.deepcopy(ref).double()  # the yardstick for the gradients
    for _ in range(2):  # twice: the running statistics accumulate
        want = ref(x)
        got = fused_fn(fb, x)
        assert got is not None and got.shape == want.shape
        assert got.is_contiguous(memory_format=layout)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        g = torch.randn_like(want)
        for m in (ref, fb, exact):
            m.zero_grad()
        got.backward(g)
        exact(x.double()).backward(g.double())
        for (name, a), b in zip(fb.named_parameters(), exact.parameters()):
            scale = float(exact[0].weight.grad.abs().max())
            if name == "0.bias":  # zero before a BatchNorm, up to rounding
                assert a.grad.abs().max() <= 1e-5 * scale
                continue
            err = float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max())
            assert err < 2e-5, (name, err)
    for a, b in zip(fb[1].buffers(), ref[1].buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, cin, h, w, cout", [(7, 1, 28, 28, 16), (3, 3, 9, 11, 8),
                                               (4, 1, 12, 10, 72)])
def test_same_as_torch(n, cin, h, w, cout):
    check_same_as_torch(*block_pair(cin, cout), fused_pool_block, images(n, cin, h, w),
                        torch.channels_last)


def test_ceil_mode_pooling_on_even_sides():
    # Ceil-mode pooling (conv4_snell_ceil) equals floor mode on even sides: fused there,
    # left to torch on odd ones.
    ref, fb = block_pair(1, 8)
    for m in (ref, fb):
        m[2].ceil_mode = True
    check_same_as_torch(ref, fb, fused_pool_block, images(5, 1, 12, 10), torch.channels_last)
    assert fused_pool_block(fb, images(5, 1, 11, 10)) is None
    assert fused_pool_block(fb, images(5, 1, 12, 9)) is None


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
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the block should run in bf16
        assert fused_pool_block(block, x) is None
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
    for (name, fp), plain, ref in named:
        if name.endswith("0.bias"):  # conv biases before BatchNorm: zero up to rounding
            continue
        err_fused = float((fp.grad.double() - ref.grad).abs().max())
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
        "from metarobust.models.fused import fused_block\n"
        "h = hashlib.sha256()\n"
        "for stride, pool in ((1, True), (2, False)):\n"
        "    torch.manual_seed(0)\n"
        "    b = _block(1, 72, stride, pool)\n"
        "    x = torch.rand(24, 1, 28, 28)\n"
        "    out = fused_block(b, x)\n"
        "    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()\n"
        "    h.update(out.detach().contiguous().numpy().tobytes())\n"
        "    for p in b.parameters():\n"
        "        h.update(p.grad.numpy().tobytes())\n"
        "    h.update(b[1].running_var.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=dict(os.environ, RAYON_NUM_THREADS=n)).stdout
        for n in ("1", "2", "3")
    }
    assert len(digests) == 1, digests


# ---------------------------------------------------------------- the strided block (Finn)

def strided_pair(cin: int, cout: int, running_stats: bool, seed: int = 0):
    torch.manual_seed(seed)
    ref = _block(cin, cout, 2, False)
    if not running_stats:  # as MAML converts its BatchNorm layers
        torch.func.replace_all_batch_norm_modules_(ref)
    with torch.no_grad():
        ref[1].weight.uniform_(0.5, 1.5)
        ref[1].bias.uniform_(-0.3, 0.3)
    return ref, copy.deepcopy(ref)


# 64 channels and more run the kernels' wide paths, others (and 2-channel input) the rest.
@pytest.mark.parametrize("n, cin, h, w, cout, running_stats", [
    (7, 1, 28, 28, 64, True), (3, 2, 9, 11, 72, False), (4, 1, 5, 6, 8, True)])
def test_strided_same_as_torch(n, cin, h, w, cout, running_stats):
    ref, fb = strided_pair(cin, cout, running_stats)
    x = images(n, cin, h, w)
    check_same_as_torch(ref, fb, fused_strided_block, x, torch.contiguous_format)
    if not running_stats:  # batch statistics in evaluation too: still fused
        fb.eval()
        with torch.no_grad():
            got = fused_strided_block(fb, x)
            assert got is not None
            torch.testing.assert_close(got, ref.eval()(x), rtol=1e-4, atol=1e-5)


def test_strided_cases_left_to_torch():
    block, _ = strided_pair(1, 4, running_stats=True)
    x = images(4, 1, 8, 8)
    assert fused_strided_block(block, x.requires_grad_()) is None  # an attack's variable
    x = x.detach()
    assert fused_strided_block(block.eval(), x) is None  # running statistics
    block.train()
    with task_batch_norm(block, 2):  # per-task statistics
        assert fused_strided_block(block, x) is None
    with fused.disabled():
        assert fused_strided_block(block, x) is None
        assert fused.fused_block(block, x) is None
    assert fused_strided_block(block, x.double()) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused_strided_block(block, x) is None
    pool, _ = block_pair(1, 4)
    assert fused_strided_block(pool, x) is None and fused_pool_block(block, x) is None
    assert fused_strided_block(block, x) is not None
    assert fused.fused_block(block, x) is not None and fused.fused_block(pool, x) is not None


@pytest.mark.parametrize("stride, pool", [(1, True), (2, False)])
def test_fused_blocks_refuse_a_second_derivative(stride, pool):
    torch.manual_seed(0)
    block = _block(1, 4, stride, pool)
    out = fused.fused_block(block, images(3, 1, 8, 8))
    assert out is not None
    gw = torch.autograd.grad((out ** 2).sum(), block[0].weight, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gw.sum().backward()
    with fused.disabled():  # torch's block: twice differentiable
        out = fused.fused_block(block, images(3, 1, 8, 8))
    assert out is None


def image_task(b: int, ways: int, shots: int, queries: int, side: int, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat(shots).expand(b, -1).contiguous()
    qy = torch.arange(ways).repeat(queries).expand(b, -1).contiguous()
    sx = torch.rand(b, ways * shots, 1, side, side, generator=g)
    qx = torch.rand(b, ways * queries, 1, side, side, generator=g)
    return Task(sx, sy, qx, qy)


@pytest.mark.parametrize("order, path", [("second", "loop"), ("second", "threads"),
                                         ("first", "loop")])
def test_maml_trains_the_same_with_and_without(order, path, monkeypatch):
    # Against the same learner in float64: the fused float32 meta-gradients are as close
    # as the unfused float32 ones. Second order: only the query passes are fused (the
    # inner steps' graphs are differentiated twice); first order: every pass.
    calls = []
    kernel = _core.strided_block_forward
    monkeypatch.setattr(_core, "strided_block_forward",
                        lambda *a: calls.append(a[0].shape[0]) or kernel(*a))
    tasks, ways, shots, queries = 3, 3, 2, 4
    batch = image_task(tasks, ways, shots, queries, 28)
    batch64 = Task(batch.support_x.double(), batch.support_y, batch.query_x.double(),
                   batch.query_y)
    body = conv4_finn(filters=8)

    def learner(fuse: bool, dtype: torch.dtype) -> MAML:
        torch.manual_seed(0)
        return MAML(copy.deepcopy(body), inner_lr=0.3, inner_steps=2, order=order,
                    ways=ways, path=path, fuse_first_block=fuse).to(dtype).train()

    learners = [learner(True, torch.float32), learner(False, torch.float32)]
    exact = learner(False, torch.float64)
    assert learners[0].backbone.fuse_first_block and not learners[1].backbone.fuse_first_block
    stats = [m.meta_backward(b, ways)
             for m, b in zip([*learners, exact], [batch, batch, batch64])]
    passes = [ways * queries] * tasks
    if order == "first":  # two inner steps on the support set, then the query pass
        passes = [ways * shots, ways * shots, ways * queries] * tasks
    assert sorted(calls) == sorted(passes)
    loss_err = [abs(st["loss"] - stats[2]["loss"]) for st in stats[:2]]
    assert loss_err[0] <= 2 * loss_err[1] + 1e-5, loss_err
    named = zip(learners[0].named_parameters(), learners[1].parameters(), exact.parameters())
    for (name, fp), plain, ref in named:
        if name.endswith(".0.bias") and "blocks" in name:  # conv biases before BatchNorm
            continue
        err_fused = float((fp.grad.double() - ref.grad).abs().max())
        err_plain = float((plain.grad.double() - ref.grad).abs().max())
        scale = float(ref.grad.abs().max())
        assert err_fused <= 2 * err_plain + 1e-5 * scale, (name, err_fused, err_plain, scale)
    # Evaluation (no gradients kept, inner steps first order) fuses every pass.
    calls.clear()
    with torch.no_grad():
        logits = learners[0].query_logits(batch, ways)
        plain_logits = learners[1].query_logits(batch, ways)
    assert len(calls) == tasks * 3
    torch.testing.assert_close(logits, plain_logits, rtol=1e-3, atol=1e-4)


def test_strided_kernel_bad_arguments():
    x = np.zeros((2, 1, 5, 5), np.float32)
    w = np.zeros((3, 1, 3, 3), np.float32)
    v = np.ones(3, np.float32)
    out = np.zeros((2, 3, 3, 3), np.float32)
    _core.strided_block_forward(x, w, v, v, v, 1e-5, out)
    _core.strided_block_backward(x, w, v, v, 1e-5, out, out, parallel=False)
    with pytest.raises(ValueError, match="weight: expected shape"):
        _core.strided_block_forward(x, np.zeros((3, 2, 3, 3), np.float32), v, v, v, 1e-5, out)
    with pytest.raises(ValueError, match="out: expected 54 values"):
        _core.strided_block_forward(x, w, v, v, v, 1e-5, out[:1])
    with pytest.raises(ValueError, match="beta: expected 3 values"):
        _core.strided_block_forward(x, w, v, v, v[:2], 1e-5, out)
    with pytest.raises(ValueError, match="eps"):
        _core.strided_block_forward(x, w, v, v, v, float("inf"), out)
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        _core.strided_block_forward(x, w, v, v, v, 1e-5, out.astype(np.float64))
    with pytest.raises(ValueError, match="dout: expected 54 values"):
        _core.strided_block_backward(x, w, v, v, 1e-5, out, out[:1])
    with pytest.raises(ValueError, match="var: expected 3 values"):
        _core.strided_block_backward(x, w, v, v[:1], 1e-5, out, out)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        _core.strided_block_backward(x, w, v, v, 1e-5, out, out.transpose(0, 2, 1, 3))


def test_maml_threads_fused_meta_gradient_on_omniglot(data_root):
    # The task threads run torch on one thread each. When the strided block handed its
    # output on channels last, torch's one-thread channels-last ops flipped ReLU masks at
    # the near-ties of real glyphs (identical background patches) differently from its
    # NCHW ops: the meta-gradient moved by ~0.7% here and MAML trained measurably slower
    # (query accuracy 0.60 instead of 0.74 after 50 steps of the Omniglot recipe). The
    # fused block must leave the meta-gradient where torch's block puts it: no farther
    # than rounding does, measured here as the move from nudging every weight by two ulps
    # (it depends on the processor's kernels: ~3e-3 on an AVX-512 Xeon).
    from metarobust import bench

    batch = bench.maml_batch(32, data_root=str(data_root))

    def meta_gradient(fuse: bool, nudge: float = 0.0) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        learner = MAML(conv4_finn(), inner_lr=0.4, ways=5, path="threads",
                       fuse_first_block=fuse).train()
        with torch.no_grad():
            for p in learner.parameters():
                p.mul_(1 + nudge)
        learner.meta_backward(batch, 5)
        return {n: p.grad for n, p in learner.named_parameters()}

    def worst_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
        return max(float((grads[n] - g).abs().max() / g.abs().max()) for n, g in ref.items()
                   if not (n.endswith(".0.bias") and "blocks" in n))  # zero before BatchNorm

    ref = meta_gradient(False)
    rounding = worst_error(meta_gradient(False, nudge=2.0**-22), ref)
    fused = worst_error(meta_gradient(True), ref)
    assert 0 < rounding < 1e-2
    assert fused <= 1.5 * rounding, (fused, rounding)
