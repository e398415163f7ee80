"""The ResNet-12 backbone (metarobust.models.resnet12) against a block written here from the
published description (Lee et al. 2019): three conv-BN-LeakyReLU(0.1) steps, a 1x1 conv +
BN shortcut added before the last activation, then a 2x2 max-pool."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metarobust.models import resnet12


def _block(x: torch.Tensor, block: torch.nn.Module) -> torch.Tensor:
    def bn(t: torch.Tensor, m: torch.nn.BatchNorm2d) -> torch.Tensor:  # training mode
        return F.batch_norm(t, None, None, m.weight, m.bias, training=True, eps=m.eps)

    out = F.leaky_relu(bn(F.conv2d(x, block.conv1.weight, padding=1), block.bn1), 0.1)
    out = F.leaky_relu(bn(F.conv2d(out, block.conv2.weight, padding=1), block.bn2), 0.1)
    out = bn(F.conv2d(out, block.conv3.weight, padding=1), block.bn3)
    short = bn(F.conv2d(x, block.shortcut[0].weight), block.shortcut[1])
    return F.max_pool2d(F.leaky_relu(out + short, 0.1), 2)


def test_forward_equals_the_published_block_order():
    torch.manual_seed(0)
    net = resnet12(in_channels=3).train()
    x = torch.randn(4, 3, 32, 32)
    ref = x
    blocks = [m for m in net.modules() if hasattr(m, "shortcut")]
    assert len(blocks) == 4
    assert [b.conv1.out_channels for b in blocks] == [64, 160, 320, 640]
    for b in blocks:
        ref = _block(ref, b)
    ref = ref.mean(dim=(2, 3))
    torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [16, 28, 84])
def test_640_features_at_any_size_of_at_least_16(size):
    net = resnet12(in_channels=1).eval()
    assert net(torch.zeros(2, 1, size, size)).shape == (2, 640)
    assert net.out_features == 640


@pytest.mark.parametrize("widths, error, words", [
    (None, TypeError, "^widths: expected a list or tuple of ints"),  # was "not iterable"
    ("abcd", TypeError, "^widths: expected a list or tuple of ints"),
    ((1, 2, 3, 2.5), TypeError, "^widths: expected an int"),
    ((1, 2, 3, 2**31), ValueError, "^in_channels, widths: a ResNet-12 with"),
])
def test_bad_widths_are_named(widths, error, words):
    with pytest.raises(error, match=words):
        resnet12(1, 16, widths)
    with pytest.raises(ValueError, match="^in_channels, widths: a ResNet-12 with"):
        resnet12(2**40, 16, (1, 1, 1, 1))
