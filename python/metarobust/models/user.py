"""Backbones of the user's own, named ``"module.path:factory"`` (``metarobust train --model``).

The factory is imported from its module (on ``sys.path``, or in the current directory) and
called with the keywords among ``in_channels`` (image channels) and ``image_size`` (image
side in pixels) that its signature names (both when it takes ``**kwargs``; none when it
takes none). It returns an ``nn.Module`` mapping ``(N, C, H, W)`` images to ``(N, ...)``
features.

>>> net = build_user_model("torchvision.models:resnet18", 3, 84)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Any

from torch import nn

__all__ = ["OBJECT_PREFIX", "build_user_model", "is_factory_name"]

_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

#: config.toml's ``model`` for a run given a backbone object: ``"object:<class path>"``
OBJECT_PREFIX = "object:"


def is_factory_name(name: Any) -> bool:
    """Whether ``name`` has the form ``"module.path:factory"``."""
    return isinstance(name, str) and not name.startswith(OBJECT_PREFIX) and bool(
        _NAME.match(name))


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not module.startswith(e.name) or os.getcwd() in sys.path:
            raise
    sys.path.insert(0, os.getcwd())  # `metarobust train` run where the user's module lies
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(os.getcwd())


def _factory(name: str) -> Any:
    module, _, attr = name.partition(":")
    try:
        obj: Any = _import(module)
    except ImportError as e:
        raise ValueError(f"model: cannot import module {module!r} of {name!r} ({e}); it must "
                         "be importable (on PYTHONPATH or in the current directory)") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model: module {module!r} has no {attr!r} (from {name!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"model: {name!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def _arguments(factory: Any, in_channels: int, image_size: int | None) -> dict[str, Any]:
    offered = {"in_channels": in_channels, "image_size": image_size}
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): call it bare
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return offered
    return {p.name: offered[p.name] for p in params if p.name in offered
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_user_model(name: str, in_channels: int, image_size: int | None) -> nn.Module:
    """The backbone made by the factory ``name`` (``"module.path:factory"``)."""
    if not is_factory_name(name):
        raise ValueError(f"model: expected 'module.path:factory', got {name!r}")
    factory = _factory(name)
    net = factory(**_arguments(factory, in_channels, image_size))
    if not isinstance(net, nn.Module):
        raise TypeError(f"model: factory {name!r} returned a {type(net).__name__}, not an "
                        "nn.Module")
    return net
