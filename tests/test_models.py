"""The model registry (metarobust.models: MODELS, build_model): every registered image
backbone maps a batch to ``(N, out_features)`` at 28 and 84 pixels; bad names, sizes and
options refused."""

from __future__ import annotations

import pytest
import torch

from metarobust.models import MODELS, Conv4, build_model


@pytest.mark.parametrize("name, out", [("conv4_finn", 64), ("conv4_snell", 64),
                                       ("conv4_snell_ceil", 256), ("conv4_mini", 64),
                                       ("resnet12", 640)])
def test_shapes_28(name: str, out: int) -> None:
    net = build_model(name, in_channels=1, image_size=28)
    y = net(torch.rand(3, 1, 28, 28))
    assert y.shape == (3, out) and net.out_features == out
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name, out", [("conv4_mini", 1600), ("resnet12", 640),
                                       ("conv4_snell", 1600), ("conv4_finn", 64),
                                       ("conv4_snell_ceil", 2304)])
def test_shapes_84(name: str, out: int) -> None:
    net = build_model(name, in_channels=3, image_size=84)
    y = net(torch.rand(2, 3, 84, 84))
    assert y.shape == (2, out) and net.out_features == out


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'conv5'.*conv4_finn"):
        build_model("conv5", 1, 28)
    with pytest.raises(TypeError, match="name"):
        build_model(4, 1, 28)
    with pytest.raises(ValueError, match="image_size.*too small"):
        build_model("conv4_snell", 1, 8)
    with pytest.raises(ValueError, match="image_size"):
        build_model("resnet12", 3, 8)
    with pytest.raises(ValueError, match="image_size"):
        build_model("conv4_finn", 1, None)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("conv4_finn", 0, 28)
    with pytest.raises(TypeError, match="conv4_finn"):
        build_model("conv4_finn", 1, 28, widths=(1, 2))
    assert set(MODELS) == {"conv4_finn", "conv4_snell", "conv4_snell_ceil", "conv4_mini",
                           "conv4_sung", "resnet12", "mlp_sinusoid"}
    with pytest.raises(ValueError, match="ceil_pool"):
        Conv4(1, 28, strided=True, ceil_pool=True)


def test_conv4_sung_keeps_its_feature_maps() -> None:
    net = build_model("conv4_sung", in_channels=1, image_size=28)
    y = net(torch.rand(2, 1, 28, 28))
    assert y.shape == (2, 64, 7, 7) and net.out_features == 64 * 7 * 7
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 2
    with pytest.raises(ValueError, match="image_size: must be in \\[4, 65536\\], got 3"):
        build_model("conv4_sung", 1, 3)
    with pytest.raises(ValueError, match="filters: must be in"):
        build_model("conv4_sung", 1, 28, filters=0)
    with pytest.raises(TypeError, match="in_channels: expected an int, got 1.0"):
        build_model("conv4_sung", 1.0, 28)
