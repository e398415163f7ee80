"""Pieces that several subcommands share."""

from __future__ import annotations

import argparse
from typing import Any

from ..ops import METHODS

PROTOTYPE_HELP = ("ProtoNet runs: evaluate with these prototypes instead of the run's ("
                  + " | ".join(METHODS) + ")")
# The split a run is tested on when --split is not given (other datasets: their reader's)
TEST_SPLITS = {"glyphs": "test", "omniglot": "evaluation"}
TTA_CHOICES = ("none", "bn", "tent")  # metarobust.robust.TTA_MODES
TTA_HELP = ("test-time adaptation per episode: none; bn (BatchNorm statistics of the "
            "episode's own images); tent (bn, then one Adam step on the BatchNorm affine "
            "parameters minimising the query entropy)")


def eval_split(dataset: str, given: str | None, data_root: str | None = None) -> str | None:
    """The split to test on: ``given``, else the dataset's test split; a data root that
    holds caches finds its test cache itself (None: ``test``/``evaluation`` or the one
    cache, see :mod:`metarobust.data.cache_dir`)."""
    if dataset not in ("glyphs", "sinusoid") and holds_caches(data_root):
        return given
    return given or TEST_SPLITS.get(dataset)


def holds_caches(data_root: str | None) -> bool:
    """Whether the data root (``data_root`` or ``$METAROBUST_DATA``) is a dataset cache or
    holds cache sub-directories."""
    from ..data import is_cache, resolve_data_root
    from ..data.cache_dir import list_caches

    root = resolve_data_root(data_root)
    return root is not None and (is_cache(root) or bool(list_caches(root)))


def set_test_prototype(learner: Any, prototype: str | None) -> None:
    """``--prototype``: evaluate a ProtoNet with other prototypes; None leaves it."""
    from ..learners import ProtoNet

    if prototype is None:
        return
    if not isinstance(learner, ProtoNet):
        raise ValueError(f"prototype: only ProtoNet runs have prototypes; this run's learner "
                         f"is {type(learner).__name__}")
    if prototype not in METHODS:
        raise ValueError(f"prototype: expected one of {', '.join(METHODS)}; got "
                         f"{prototype!r}")
    learner.prototype = prototype


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default: `` (default: X)`` is appended to an option's
    help unless the text states it (flags and options without a default show none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default: " in text or default is None
                or default is argparse.SUPPRESS or isinstance(default, bool) or default == []):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults (:class:`HelpFormatter`); the parser
    class of every subcommand."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)
