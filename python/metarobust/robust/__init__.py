"""Robustness: perturbations (support-label noise, input noise and corruptions),
adversarial attacks (FGSM, PGD), certification by randomized smoothing, open-set queries
(unknown classes among the queries, AUROC of a score), test-time adaptation
(``TTALearner``), robust training pieces, and the robustness suite with its report (see
``metarobust robustness`` and ``metarobust certify``)."""

from __future__ import annotations

from .attacks import adversarial_queries, fgsm, pgd
from .certify import Smoothing, certify, clopper_pearson_lower
from .corruptions import CORRUPTIONS, Augment, corrupt
from .grid import SUITES, check_grid, suite_grid
from .label_noise import LABEL_NOISE_KINDS, apply_label_noise
from .open_set import OpenSetSampler, auroc, evaluate_open_set
from .report import format_table, load_result, plot_results, write_report
from .suite import run_suite
from .tta import TTA_MODES, TTALearner

__all__ = [
    "CORRUPTIONS", "LABEL_NOISE_KINDS", "SUITES", "TTA_MODES", "Augment", "OpenSetSampler",
    "Smoothing", "TTALearner", "adversarial_queries", "apply_label_noise", "auroc", "certify",
    "check_grid", "clopper_pearson_lower", "corrupt", "evaluate_open_set", "fgsm",
    "format_table", "load_result", "pgd", "plot_results", "run_suite", "suite_grid",
    "write_report",
]
