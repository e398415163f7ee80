"""Robustness: perturbations (support-label noise, input noise and corruptions),
adversarial attacks (FGSM, PGD), certification by randomized smoothing, open-set queries
(unknown classes among the queries, AUROC of a score), test-time adaptation
(``TTALearner``), robust training pieces (adversarial querying, TRADES, ADML), and the
robustness suite with its report (see ``metarobust robustness`` and ``metarobust
certify``)."""

from __future__ import annotations

from .attacks import adversarial_queries, fgsm, pgd
from .certify import Smoothing, certify, clopper_pearson_lower
from .corruptions import CORRUPTIONS, Augment, corrupt
from .grid import SUITES, check_grid, suite_grid
from .label_noise import LABEL_NOISE_KINDS, apply_label_noise
from .meta_objectives import OBJECTIVES, adml_backward, trades_backward, trades_queries
from .open_set import OpenSetSampler, auroc, evaluate_open_set
from .report import format_table, load_result, plot_results, write_report
from .suite import run_suite
from .tta import TTA_MODES, TTALearner

__all__ = [
    "CORRUPTIONS", "LABEL_NOISE_KINDS", "OBJECTIVES", "SUITES", "TTA_MODES", "Augment",
    "OpenSetSampler", "Smoothing", "TTALearner", "adml_backward", "adversarial_queries",
    "apply_label_noise", "auroc", "certify", "check_grid", "clopper_pearson_lower", "corrupt",
    "evaluate_open_set", "fgsm",
    "format_table", "load_result", "pgd", "plot_results", "run_suite", "suite_grid",
    "trades_backward", "trades_queries", "write_report",
]
