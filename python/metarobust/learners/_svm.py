"""A batched solver of the Crammer-Singer multi-class SVM dual, the head of MetaOptNet.

For support embeddings ``X (n, D)``, one-hot labels ``Y (n, K)`` and cost ``C``, the dual
(in liblinear's notation, as Lee et al. 2019) is

    min_A  1/2 sum_k |sum_i A_ik x_i|^2 - sum_i A_{i, y_i}
    s.t.   A_ik <= C Y_ik,  sum_k A_ik = 0   for every i,

and the class weights are ``w_k = sum_i A_ik x_i``. With ``B = C Y - A`` each row of ``B``
lies on the simplex scaled by ``C`` (``B_ik >= 0``, ``sum_k B_ik = C``), so the problem is
a smooth convex quadratic over a product of simplices: solved here by accelerated projected
gradient (FISTA, step ``1 / lambda_max(X X^T)``) with the exact sort-based projection.

Gradients are those of the unrolled iterations (autograd through every step): the output
is exactly the function that is differentiated (gradcheck holds at any iteration count),
nothing depends on guessing the active set of a solution the solver stops short of, and
the memory cost, ``steps * n * K`` values per task, is small for few-shot supports. At
convergence these gradients are those of the exact solution (the tests check both).
"""

from __future__ import annotations

import torch

__all__ = ["crammer_singer_dual", "project_simplex"]


def project_simplex(v: torch.Tensor, total: float) -> torch.Tensor:
    """The Euclidean projection of each row of ``v`` (last dimension) onto
    ``{b >= 0, sum(b) = total}`` (Held, Wolfe and Crowder's sort-based rule)."""
    u = torch.sort(v, dim=-1, descending=True).values
    css = torch.cumsum(u, dim=-1) - total
    ind = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - css / ind > 0).sum(-1, keepdim=True).clamp_min(1)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return torch.clamp(v - theta, min=0.0)


def crammer_singer_dual(gram: torch.Tensor, y: torch.Tensor, c: float,
                        steps: int) -> torch.Tensor:
    """The dual variables ``A (b, n, K)`` after ``steps`` FISTA iterations from ``A = 0``,
    for Gram matrices ``gram (b, n, n)`` of the support embeddings and one-hot labels
    ``y (b, n, K)``; differentiable with respect to ``gram`` by unrolling."""
    lip = torch.linalg.eigvalsh(gram)[..., -1:, None].clamp_min(1e-12)
    step = 1.0 / lip
    beta = c * y  # A = 0
    z, t = beta, 1.0
    for _ in range(steps):
        # the gradient in B of the objective at A = C Y - B is Y - G A
        grad = y - gram @ (c * y - z)
        new = project_simplex(z - step * grad, c)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = new + ((t - 1.0) / t_next) * (new - beta)
        beta, t = new, t_next
    return c * y - beta
