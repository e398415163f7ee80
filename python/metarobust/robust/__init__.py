"""Robustness: perturbations (support-label noise, input noise and corruptions),
adversarial attacks (FGSM, PGD), robust training pieces, and the robustness suite with its
report (see ``metarobust robustness``)."""

from __future__ import annotations
