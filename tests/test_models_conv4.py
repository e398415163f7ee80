"""The Conv-4 backbones (metarobust.models.conv4): widths, parameter counts (the ResNet-12's
too, in the same test), structure (ResNet-12's LeakyReLUs too), Snell's blocks against the
published layer order, and ceil-mode pooling."""

from __future__ import annotations

import pytest
import torch
from _models import n_params
from torch import nn

from metarobust.models import Conv4, build_model, conv4_mini, resnet12


def conv_params(cin: int, f: int) -> int:
    # 4 x (3x3 conv with bias + BatchNorm affine)
    return (cin * f * 9 + f + 2 * f) + 3 * (f * f * 9 + f + 2 * f)


def test_conv4_mini_filters() -> None:
    net = conv4_mini(3, 84, filters=32)  # Finn et al.'s miniImageNet width
    assert net(torch.rand(2, 3, 84, 84)).shape == (2, 800) and net.out_features == 800
    assert n_params(net) == conv_params(3, 32)


def test_parameter_counts() -> None:
    assert n_params(build_model("conv4_finn", 1, 28)) == conv_params(1, 64) == 111_936
    assert n_params(build_model("conv4_snell", 1, 28)) == conv_params(1, 64)
    assert n_params(build_model("conv4_snell_ceil", 1, 28)) == conv_params(1, 64)
    assert n_params(build_model("conv4_mini", 3, 84)) == conv_params(3, 64)
    # The standard ResNet-12 has about 12.4M parameters.
    assert 12.3e6 < n_params(resnet12(3, 84)) < 12.5e6


def test_structure() -> None:
    finn = build_model("conv4_finn", 1, 28)
    convs = [m for m in finn.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4
    assert not any(isinstance(m, nn.MaxPool2d) for m in finn.modules())
    snell = build_model("conv4_snell", 1, 28)
    assert sum(isinstance(m, nn.MaxPool2d) for m in snell.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in snell.modules()) == 4
    res = resnet12(3, 84)
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1
               for m in res.modules()) == 4


@pytest.mark.parametrize("channels_last", [False, True])
def test_snell_blocks_equal_the_published_order(channels_last: bool) -> None:
    # The blocks pool before the ReLU (cheaper); Snell et al.'s order is conv, BN, ReLU,
    # pool. Same outputs and the same gradients, written out with torch.nn.functional.
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = build_model("conv4_snell", 1, 28).double()
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def published(params: list[torch.Tensor]) -> torch.Tensor:
        h = x
        for i in range(4):
            w, b, gamma, beta = params[4 * i: 4 * i + 4]
            h = F.conv2d(h, w, b, padding=1)
            h = F.batch_norm(h, None, None, gamma, beta, training=True)
            h = F.max_pool2d(F.relu(h), 2)
        return h.flatten(1)

    params = list(net.parameters())
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    out, ref = net(x), published(ref_params)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, ref_params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_snell_ceil_keeps_the_last_row_and_column() -> None:
    # 28 -> 14 -> 7 -> 4 -> 2: the 7x7 maps' last row and column reach the output (Snell's
    # floor pooling drops them: 7 -> 3), and the same weights give conv4_snell's values
    # wherever the sides are even.
    torch.manual_seed(0)
    floor, ceil = build_model("conv4_snell", 1, 28), build_model("conv4_snell_ceil", 1, 28)
    ceil.load_state_dict(floor.state_dict())
    assert [m.ceil_mode for m in ceil.modules() if isinstance(m, nn.MaxPool2d)] == [True] * 4
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(ceil.blocks[:2](x), floor.blocks[:2](x))
    for net, reaches in ((ceil, True), (floor, False)):
        net.eval()  # BatchNorm per element: a pixel's gradient is its own path's
        h = net.blocks[2][0](net.blocks[:2](x)).detach().requires_grad_()  # block 3's conv
        out = net.blocks[3](net.blocks[2][1:](h)).sum()
        grad = torch.autograd.grad(out, h)[0]
        assert bool(grad[:, :, 6].any()) == reaches and bool(grad[:, :, :, 6].any()) == reaches
        assert grad[:, :, :6, :6].any()


@pytest.mark.parametrize("factory", ["conv4_finn", "conv4_snell", "conv4_snell_ceil",
                                     "conv4_mini"])
def test_sizes_beyond_memory_are_refused_before_allocating(factory):
    # 2**31 used to reach torch's allocator (a RuntimeError), 2**64 an overflow in
    # torch.empty; neither named the argument
    for kwargs in (dict(in_channels=2**31), dict(filters=2**31), dict(filters=2**64)):
        with pytest.raises(ValueError, match="^in_channels, filters: a Conv-4 with"):
            build_model(factory, **kwargs)


def test_flags_are_bools():
    for flag in ("strided", "ceil_pool"):
        with pytest.raises(TypeError, match=f"^{flag}: expected a bool"):
            Conv4(1, 28, 4, **{flag: None})
