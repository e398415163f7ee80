"""SimpleShot (Wang et al., 2019): a backbone pre-trained as a linear classifier over the
base classes, then a nearest-centroid classifier over centred and L2-normalised (CL2N)
features.

``CL2N(f) = (f - m) / |f - m|``, with ``m`` the mean feature of the base classes
(``centering="base"``, the paper's), of the task's own support items (``"support"``) or 0
(``"none"``: plain L2 normalisation). The logits are minus the squared Euclidean distance
between a query's CL2N feature and each class centroid, the mean of the class's CL2N support
features.

The base mean is a buffer (saved with the learner's ``state_dict``) that the trainer feeds
during pre-training through :meth:`SimpleShot.observe_base_features`: an exponential moving
average with ``base_momentum`` (as BatchNorm's running mean, started at the first batch's
mean, so it follows the network as it trains) or, with ``base_momentum=None``, the
cumulative mean of every feature vector observed. Before any observation it is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_real
from ._transfer import TransferLearner, class_means, mask_absent

__all__ = ["SimpleShot"]

CENTERINGS = ("base", "support", "none")


class SimpleShot(TransferLearner):
    """Nearest centroid over CL2N features of a pre-trained backbone.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        centering: the mean subtracted before the L2 normalisation: ``"base"`` (the running
            mean of the pre-training features), ``"support"`` (the task's support items) or
            ``"none"``.
        base_momentum: weight of each new pre-training batch in the base mean, in (0, 1];
            None: the cumulative mean over every observed feature vector.
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.

    No episodic stage: the Trainer pre-trains the backbone and never calls
    ``meta_backward`` (which still works: the loss of the nearest-centroid logits).
    """

    pretrain_head = "linear"
    episodic = False
    base_mean: torch.Tensor
    base_count: torch.Tensor

    def __init__(self, backbone: nn.Module, *, centering: str = "base",
                 base_momentum: float | None = 0.1,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        self.centering = check_choice(centering, "centering", CENTERINGS)
        self.base_momentum = (None if base_momentum is None else
                              check_real(base_momentum, "base_momentum", 0.0, 1.0,
                                         low_open=True))
        # the feature size is known at the first observation (or a loaded state_dict)
        self.register_buffer("base_mean", torch.zeros(0))
        self.register_buffer("base_count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def observe_base_features(self, features: torch.Tensor) -> None:
        """Fold a pre-training batch's embeddings ``(N, D)`` into the base mean."""
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(f"features: expected a float tensor (N, D), got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        d = self.base_mean.numel()
        if features.dim() != 2 or features.shape[0] == 0 or (d and features.shape[1] != d):
            want = f"(N, {d})" if d else "(N, D) with N >= 1"
            raise ValueError(f"features: expected shape {want}, got {tuple(features.shape)}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features: holds NaN or inf")
        batch = features.detach().to(torch.float64).mean(0)
        n = features.shape[0]
        count = int(self.base_count)
        if count == 0:
            new = batch
        elif self.base_momentum is None:
            new = self.base_mean.to(torch.float64) + (batch - self.base_mean) * (n / (count + n))
        else:
            new = torch.lerp(self.base_mean.to(torch.float64), batch, self.base_momentum)
        self.base_mean = new.to(dtype=self.base_mean.dtype, device=self.base_count.device)
        self.base_count += n

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the stored base mean has the feature size of the run; an unobserved learner's is 0
        key = prefix + "base_mean"
        stored = state_dict.get(key)
        if isinstance(stored, torch.Tensor) and stored.shape != self.base_mean.shape:
            self.base_mean = torch.zeros(stored.shape, dtype=self.base_mean.dtype,
                                         device=self.base_mean.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def cl2n(self, se: torch.Tensor, qe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The support and query embeddings ``(c, n, D)`` centred as ``centering`` says
        and L2-normalised."""
        if self.centering == "support":
            mean = se.mean(1, keepdim=True)
            se, qe = se - mean, qe - mean
        elif self.centering == "base" and self.base_mean.numel():
            if self.base_mean.numel() != se.shape[-1]:
                raise ValueError(f"base_mean: {self.base_mean.numel()} features observed in "
                                 f"pre-training, the backbone gives {se.shape[-1]}")
            mean = self.base_mean.to(se.dtype)
            se, qe = se - mean, qe - mean
        return F.normalize(se, dim=-1, eps=1e-12), F.normalize(qe, dim=-1, eps=1e-12)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        se, qe = self.cl2n(se, qe)
        centroids, present = class_means(se, sy, ways)
        # |q|^2 + |c|^2 - 2 q.c without the (c, Q, ways, D) difference tensor
        dist = (qe.pow(2).sum(-1, keepdim=True) + centroids.pow(2).sum(-1)[:, None, :]
                - 2 * qe @ centroids.transpose(1, 2)).clamp_min(0)
        return mask_absent(-dist, present)
