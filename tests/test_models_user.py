"""Backbone factories named "module.path:factory": the keywords each is called with."""

from __future__ import annotations

import sys
import types

import pytest
from torch import nn

from metarobust.models.user import build_user_model, is_factory_name


@pytest.fixture
def module():
    mod = types.ModuleType("mr_test_factories")
    calls: list[dict] = []

    def both(in_channels, image_size):
        calls.append({"in_channels": in_channels, "image_size": image_size})
        return nn.Identity()

    def channels_only(in_channels):
        calls.append({"in_channels": in_channels})
        return nn.Identity()

    def anything(**kw):
        calls.append(kw)
        return nn.Identity()

    def none():
        calls.append({})
        return nn.Identity()

    def not_a_module():
        return 3

    mod.__dict__.update(both=both, channels_only=channels_only, anything=anything, none=none,
                        not_a_module=not_a_module, nested=types.SimpleNamespace(none=none))
    sys.modules[mod.__name__] = mod
    yield calls
    del sys.modules[mod.__name__]


@pytest.mark.parametrize("name,want", [
    ("both", {"in_channels": 3, "image_size": 84}), ("channels_only", {"in_channels": 3}),
    ("anything", {"in_channels": 3, "image_size": 84}), ("none", {}), ("nested.none", {})])
def test_a_factory_gets_the_keywords_it_names(module, name, want):
    assert isinstance(build_user_model(f"mr_test_factories:{name}", 3, 84), nn.Identity)
    assert module == [want]


def test_bad_factories_are_named(module):
    with pytest.raises(TypeError, match="model: factory 'mr_test_factories:not_a_module' "
                                        "returned a int, not an nn.Module"):
        build_user_model("mr_test_factories:not_a_module", 1, 28)
    with pytest.raises(ValueError, match="model: expected 'module.path:factory', got 'conv4'"):
        build_user_model("conv4", 1, 28)
    assert is_factory_name("a.b:c") and not is_factory_name("object:a.B")
    assert not is_factory_name("a b:c") and not is_factory_name(3)
