"""Checks of the tensors a user hands a learner for one task or a batch of tasks
(``predict`` and the learner's call): labels, image layout and value range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["INTEGER_DTYPES", "check_call_labels", "check_image_layout", "feature_size",
           "support_labels"]

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def support_labels(support_y: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """One task's support labels as int64 and its ways (``max + 1``); the labels must cover
    ``0..ways-1``."""
    if support_y.dim() != 1 or support_y.shape[0] != n:
        raise ValueError(f"support_y: expected shape ({n},) matching support_x, got "
                         f"{tuple(support_y.shape)}")
    if support_y.dtype not in INTEGER_DTYPES:
        raise TypeError(f"support_y: expected integer labels, got {support_y.dtype}")
    support_y = support_y.long()
    if support_y.numel() == 0:
        raise ValueError("support_y: the support set is empty")
    ways = int(support_y.max()) + 1
    present = torch.unique(support_y).tolist()
    if int(support_y.min()) < 0 or len(present) != ways:
        raise ValueError(
            f"support_y: labels must cover 0..ways-1 with ways = max + 1 = {ways}; "
            f"got labels {present[:20]}{' ...' if len(present) > 20 else ''}"
            + _missing(present, ways))
    return support_y, ways


def _missing(present: list[int], ways: int) -> str:
    """The first labels of 0..ways-1 absent from the sorted ``present`` (without building
    the range: ``ways`` may be huge)."""
    have, k = set(present), 0
    missing: list[int] = []
    while k < ways and len(missing) < 10:
        if k not in have:
            missing.append(k)
        k += 1
    if not missing:
        return ""
    more = ways - len([p for p in present if 0 <= p < ways]) > len(missing)
    return f" (missing {missing}{' ...' if more else ''})"


def check_image_layout(x: torch.Tensor, name: str, lead: int) -> None:
    """Classifier inputs: images with a channel dimension, float values in [0, 1]."""
    if x.dim() == 3:
        shape = "(B, n, C, H, W) (support_y (B, n): a batch of tasks)" if lead else "(n, C, H, W)"
        raise ValueError(f"{name}: expected images {shape}, got images without a channel "
                         f"dimension, shape {tuple(x.shape)}; add one with "
                         f"{name}.unsqueeze({1 + lead})")
    if x.is_floating_point() and x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name}: float images must be in [0, 1], got values in "
                             f"[{lo:g}, {hi:g}]; divide 0-255 images by 255 or pass them as "
                             "uint8")


def feature_size(model: nn.Module, input_shape: Sequence[int] | None) -> int:
    """The flattened output width of ``model``: its int ``out_features``, else a dry run on
    two zero inputs of ``input_shape`` (eval mode and no grad: BatchNorm statistics and
    parameters untouched)."""
    feats = getattr(model, "out_features", None)
    if isinstance(feats, int) and not isinstance(feats, bool):
        return feats
    if input_shape is None:
        raise ValueError(f"input_shape: a {type(model).__name__} backbone has no int "
                         "`out_features`; pass input_shape=(C, H, W) (one input's shape) so "
                         "the feature size is found by a dry run, or a head module")
    shape = _shape(input_shape)
    ref = next(iter(model.parameters()), None)
    kw: dict[str, Any] = ({} if ref is None or not ref.is_floating_point()
                          else {"dtype": ref.dtype, "device": ref.device})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape, **kw))
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"input_shape: the backbone fails on inputs of shape {shape} ({e})"
                         ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 2:
        raise ValueError(f"model: expected a backbone returning (N, ...) features, got "
                         f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))} for 2 inputs")
    return int(out[0].numel())


def _shape(input_shape: Any) -> tuple[int, ...]:
    if (not isinstance(input_shape, (tuple, list)) or not input_shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                   for d in input_shape)):
        raise ValueError(f"input_shape: expected a tuple of ints >= 1 such as (C, H, W), got "
                         f"{input_shape!r}")
    return tuple(input_shape)


def check_call_labels(support_x: torch.Tensor, support_y: torch.Tensor,
                      classification: bool) -> int:
    """The layout of a learner call's labels (classification: ``(n,)`` or ``(B, n)``;
    regression targets ``(n, k)`` or ``(B, n, k)``), matching ``support_x``'s leading
    dimensions and integer for a classifier. Returns 1 for a batch of tasks, else 0."""
    one, many = ("(n,)", "(B, n)") if classification else ("(n, outputs)", "(B, n, outputs)")
    dims = support_y.dim() - (0 if classification else 1)
    if dims not in (1, 2):
        raise ValueError(f"support_y: expected {one} for one task or {many} for a batch of "
                         f"tasks, got shape {tuple(support_y.shape)}")
    lead = dims - 1
    if not isinstance(support_x, torch.Tensor):
        raise TypeError(f"support_x: expected a torch.Tensor, got {type(support_x).__name__}")
    if support_x.dim() < dims + 1 or support_x.shape[:dims] != support_y.shape[:dims]:
        raise ValueError(f"support_y: shape {tuple(support_y.shape)} does not match "
                         f"support_x {tuple(support_x.shape)} ({one} labels for (n, C, H, W) "
                         f"images, or {many} for (B, n, C, H, W))")
    if classification and support_y.dtype not in INTEGER_DTYPES:
        raise TypeError(f"support_y: expected integer labels, got {support_y.dtype}")
    return lead
