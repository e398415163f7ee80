"""A worker process: reads cases (one JSON object per line on stdin), runs each and writes
its outcome (one JSON line) on the stream that was stdout when it started; anything the
package prints goes to stderr, which the pool keeps for crash reports.

``run_case`` builds the case's values by executing its source (the same text a reproducer
holds), calls the target, and classifies the result (see :mod:`fuzz.classify`)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from typing import Any

from .classify import exception_outcome, return_outcome
from .registry import load_targets
from .values import HELPERS

DETAIL_CHARS = 1500


def base_env() -> dict[str, Any]:
    """The names case source may use."""
    import numpy as np
    import torch

    import metarobust as mr
    from metarobust import _core

    env: dict[str, Any] = {"np": np, "torch": torch, "mr": mr, "_core": _core, "os": os,
                           "__name__": "fuzz_case"}
    exec(HELPERS, env)
    return env


def source(case: dict, target_call: str) -> tuple[str, str]:
    """The statements that build a case's values, and its call expression."""
    lines = list(case["setup"]) + [f"{k} = {v}" for k, v in case["args"]]
    return "\n".join(lines), target_call


def _snapshot(env: dict, names: list[str]) -> dict[str, Any]:
    import numpy as np
    import torch

    out = {}
    for n in names:
        v = env.get(n)
        if isinstance(v, np.ndarray):
            out[n] = np.array(v, copy=True)
        elif isinstance(v, torch.Tensor):
            out[n] = v.detach().clone()
    return out


def _changed(env: dict, snap: dict[str, Any]) -> list[str]:
    import numpy as np
    import torch

    bad = []
    for n, before in snap.items():
        now = env.get(n)
        if isinstance(before, torch.Tensor):
            same = (isinstance(now, torch.Tensor) and now.shape == before.shape
                    and torch.equal(now.detach().nan_to_num(0.5), before.nan_to_num(0.5)))
        else:
            same = (isinstance(now, np.ndarray) and now.shape == before.shape
                    and np.array_equal(now, before, equal_nan=before.dtype.kind in "fc"))
        if not same:
            bad.append(n)
    return bad


def _value_text(env: dict, case: dict) -> str | None:
    arg = case.get("arg")
    if arg is None or arg not in env:
        return None
    v = env[arg]
    return os.fspath(v) if isinstance(v, (str, os.PathLike)) else None


def run_case(case: dict, targets: dict) -> dict:
    """Runs one case in this process; returns ``{"outcome", "detail"}``."""
    target = targets[case["target"]]
    env = base_env()
    tmp = tempfile.mkdtemp(prefix="fuzzcase-")
    env["tmp"] = tmp
    try:
        build, call = source(case, target.call)
        try:
            exec(build, env)
        except BaseException:
            return {"outcome": "error", "detail": "building the case failed:\n"
                    + traceback.format_exc()[-DETAIL_CHARS:]}
        inputs = [k for k, _ in case["args"] if k not in target.outputs]
        snap = _snapshot(env, inputs) if case["kind"] == "valid" or case["tolerated"] else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = eval(call, env)
        except BaseException as exc:
            outcome, detail = exception_outcome(case, exc, target.rejects,
                                                _value_text(env, case))
            return {"outcome": outcome, "detail": detail[:DETAIL_CHARS],
                    "exception": type(exc).__name__}
        problem = _check(target, result, env, case, snap)
        outcome, detail = return_outcome(case, problem)
        return {"outcome": outcome, "detail": detail[:DETAIL_CHARS]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check(target, result: Any, env: dict, case: dict, snap: dict) -> str | None:
    """None when the result passes the target's check and no input changed."""
    changed = _changed(env, snap)
    if changed:
        return f"modified its input(s) {', '.join(changed)}"
    if target.check is None:
        return None
    args = {k: env[k] for k, _ in case["args"]}
    args.update({k: env[k] for k in case["meta"].get("env", ())})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.check(result, args, copy.deepcopy(case["meta"]))
    except AssertionError as e:
        return f"check: {e}"
    except Exception:
        return "check raised:\n" + traceback.format_exc()[-DETAIL_CHARS:]
    return None


def main() -> None:
    """The worker loop (``python -m fuzz.worker``)."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the package prints goes to stderr
    sys.stdout = sys.stderr
    limit = int(os.environ.get("FUZZ_MEMORY_MB", "0"))
    if limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit << 20, limit << 20))
    targets = {t.name: t for t in load_targets(os.environ.get("FUZZ_TARGET_MODULES"))}
    import torch

    torch.set_num_threads(1)
    base_env()
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        case = json.loads(line)
        result = run_case(case, targets)
        proto.write(json.dumps(result) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
