"""A pool of worker processes (``python -m fuzz.worker``), one case in flight per worker.

A worker that dies mid-case (signal, abort, exit) is recorded as a crash of that case and
replaced; one that runs past the per-case timeout is killed (its whole process group), its
case recorded as a hang, and replaced. Each worker's stderr goes to a file: the part written
during a crashed case (a Rust panic message, Python's fault handler) goes into the report.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0  # importing torch on a loaded machine can take a while
RECYCLE_AFTER = 3000  # cases per worker before a fresh one (bounds leaks)


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def _stderr_summary(text: str, limit: int = 1200) -> str:
    """The telling lines of a dead worker's stderr (panic, allocation failure, fault)."""
    keys = ("panicked at", "memory allocation", "Fatal Python error", "Segmentation",
            "Aborted", "Error", "error", "File \"")
    lines = [ln for ln in text.splitlines() if any(k in ln for k in keys)]
    return ("\n".join(lines[-12:]) or text[-limit:])[-limit:]


class Worker:
    """One worker process and the case it is running."""

    def __init__(self, wid: int, env: dict[str, str], logdir: Path) -> None:
        self.wid = wid
        self.err_path = logdir / f"worker-{wid}.stderr"
        self.err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fuzz.worker"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            start_new_session=True)
        self.buf = b""
        self.ready = False
        self.case: dict | None = None
        self.deadline = time.monotonic() + START_TIMEOUT
        self.err_offset = 0
        self.done = 0

    def send(self, case: dict, timeout: float) -> None:
        self.err.flush()
        self.err_offset = self.err_path.stat().st_size
        self.case = case
        self.deadline = time.monotonic() + timeout
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(case) + "\n").encode())
        self.proc.stdin.flush()

    def stderr_since_case(self) -> str:
        with open(self.err_path, "rb") as f:
            f.seek(self.err_offset)
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.err.close()

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            pass
        self.kill()


class Pool:
    """``workers`` processes running cases with a per-case ``timeout`` (seconds) and an
    address-space limit of ``memory_mb`` MiB each (0: none)."""

    def __init__(self, workers: int, timeout: float, memory_mb: int, logdir: Path,
                 target_modules: str | None = None) -> None:
        self.timeout = timeout
        self.logdir = logdir
        logdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update({"FUZZ_MEMORY_MB": str(memory_mb), "RUST_BACKTRACE": "0",
                         "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"})
        path = [str(REPO), *filter(None, self.env.get("PYTHONPATH", "").split(os.pathsep))]
        self.env["PYTHONPATH"] = os.pathsep.join(path)
        if target_modules:
            self.env["FUZZ_TARGET_MODULES"] = target_modules
        self.sel = selectors.DefaultSelector()
        self.next_id = 0
        self.failed_starts = 0
        self.workers = [self._spawn() for _ in range(workers)]

    def _spawn(self) -> Worker:
        w = Worker(self.next_id, self.env, self.logdir)
        self.next_id += 1
        assert w.proc.stdout is not None
        os.set_blocking(w.proc.stdout.fileno(), False)
        self.sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        return w

    def _replace(self, w: Worker, kill: bool = True) -> None:
        assert w.proc.stdout is not None
        self.sel.unregister(w.proc.stdout)
        w.kill() if kill else w.close()
        self.workers[self.workers.index(w)] = self._spawn()

    def run(self, cases: Iterator[dict], on_result: Callable[[dict, dict], None],
            stop_at: float | None = None) -> None:
        """Runs ``cases`` (until exhausted or ``stop_at``, a ``time.monotonic()``), calling
        ``on_result(case, result)`` for each as it finishes."""
        pending = True
        while True:
            if pending and (stop_at is None or time.monotonic() < stop_at):
                for w in self.workers:
                    if w.ready and w.case is None:
                        case = next(cases, None)
                        if case is None:
                            pending = False
                            break
                        w.send(case, self.timeout)
            else:
                pending = False
            if not pending and all(w.case is None for w in self.workers):
                return
            self._wait(on_result)

    def _wait(self, on_result: Callable[[dict, dict], None]) -> None:
        now = time.monotonic()
        wait = max(0.0, min(w.deadline for w in self.workers) - now)
        for key, _ in self.sel.select(timeout=min(wait, 1.0)):
            self._read(key.data, on_result)
        now = time.monotonic()
        for w in list(self.workers):
            if now > w.deadline and (w.case is not None or not w.ready):
                if w.case is not None:
                    on_result(w.case, {"outcome": "hang",
                                       "detail": f"no result after {self.timeout:g} s"})
                else:
                    self._start_failed(w, "did not start in time")
                self._replace(w)

    def _read(self, w: Worker, on_result: Callable[[dict, dict], None]) -> None:
        if w not in self.workers:  # replaced earlier in this round of events
            return
        assert w.proc.stdout is not None
        try:
            data = os.read(w.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self._died(w, on_result)
            return
        w.buf += data
        while b"\n" in w.buf:
            line, w.buf = w.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("ready"):
                w.ready, w.deadline = True, float("inf")
                self.failed_starts = 0
                continue
            case, w.case, w.deadline = w.case, None, float("inf")
            if case is not None:
                on_result(case, msg)
                w.done += 1
        if w.done >= RECYCLE_AFTER and w.case is None:
            self._replace(w, kill=False)

    def _died(self, w: Worker, on_result: Callable[[dict, dict], None]) -> None:
        rc = w.proc.wait()
        if w.case is not None:
            text = w.stderr_since_case()
            on_result(w.case, {"outcome": "crash", "detail": f"worker {_signal_name(rc)}\n"
                               + _stderr_summary(text)})
        elif not w.ready:
            self._start_failed(w, _signal_name(rc))
        self._replace(w, kill=False)

    def _start_failed(self, w: Worker, why: str) -> None:
        self.failed_starts += 1
        if self.failed_starts > 3:
            tail = w.err_path.read_text(errors="replace")[-2000:]
            self.close()
            raise RuntimeError(f"fuzz workers cannot start ({why}):\n{tail}")

    def close(self) -> None:
        for w in self.workers:
            try:
                self.sel.unregister(w.proc.stdout)
            except (KeyError, ValueError):
                pass
            w.close()
        self.workers = []
