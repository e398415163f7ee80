"""Repeats a short two-process ``torchrun -m metarobust train`` (gloo, CPU) many times
beside busy loops that load the CPUs, and counts the runs that did not exit 0 with their
result line printed: a successful run must end cleanly on every rank, every time.

::

    python experiments/scripts/distributed_teardown.py --runs 40 --load 2
    python experiments/scripts/distributed_teardown.py --runs 20 --starve --json x.json

``--starve`` widens the window of the teardown race: just before the run's last
collective, each rank's gloo worker threads are moved to SCHED_IDLE on the CPU the busy
loops are pinned to, so a worker is likely to be preempted between completing that
collective and dropping its work. A process group left alive past teardown then has the
worker drop the work (and the last reference to a tensor with a Python object, which
takes the GIL) while the interpreter finalizes: the thread is ended inside a C++
destructor and the process aborts ("terminate called without an active exception").

Python's fault handler is on; each failure's exit status and output tail are printed.
``--cores DIR`` runs each job in a folder of DIR with core dumps allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUSY = "import os, sys\nif len(sys.argv) > 1: os.sched_setaffinity(0, {int(sys.argv[1])})\n" \
       "while True: pass"
# `metarobust` with the gloo workers demoted before the last collective (--starve)
STARVING_CLI = Path(__file__).with_name("starved_gloo_cli.py")


def command(out: Path, episodes: int, starve: tuple[Path, int] | None) -> list[str]:
    entry = ["-m", "metarobust"] if starve is None else [str(starve[0]), str(starve[1])]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node=2", *entry, "train", "--learner", "protonet",
            "--dataset", "glyphs", "--glyph-classes", "30", "--ways", "5", "--shots", "1",
            "--queries", "3", "--meta-batch", "2", "--episodes", str(episodes),
            "--val-episodes", "10", "--device", "cpu",
            "--out", str(out)]


def _allow_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def one_run(cmd: list[str], timeout: float, cwd: Path | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    if cwd is not None:  # a crashed rank leaves its core file in its working directory
        cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=cwd, preexec_fn=_allow_cores if cwd is not None else None)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", str(e.stdout or ""), str(e.stderr or "")
    printed = sum(line.startswith('{"run"') for line in stdout.splitlines())
    return {"rc": rc, "printed": printed, "seconds": time.perf_counter() - t0,
            "ok": rc == 0 and printed == 1,
            "aborted": "terminate called without an active exception" in stderr,
            "tail": (stdout + stderr)[-4000:]}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--load", type=int, default=2, help="busy-loop processes beside the runs")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--parallel", type=int, default=2, help="jobs run at the same time")
    p.add_argument("--starve", action="store_true",
                   help="demote the gloo workers before the last collective (see above)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--cores", type=Path, default=None,
                   help="run each job in a folder here, with core dumps allowed")
    return p.parse_args()


def repeat(args: argparse.Namespace, tmp: Path) -> list[dict]:
    starve = None
    if args.starve:
        starve = (STARVING_CLI, max(os.sched_getaffinity(0)))
    busy_args = [str(starve[1])] if starve else []
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, *busy_args])
            for _ in range(args.load)]
    runs: list[dict] = []

    def job(i: int) -> dict:
        cwd = None if args.cores is None else args.cores / f"run{i}"
        r = one_run(command(tmp / f"run{i}", args.episodes, starve), args.timeout, cwd)
        print(f"run {i + 1}/{args.runs}: rc={r['rc']} result_lines={r['printed']} "
              f"{r['seconds']:.1f}s", flush=True)
        if not r["ok"]:
            print(r["tail"], flush=True)
        return r

    try:
        with ThreadPoolExecutor(args.parallel) as pool:
            runs = list(pool.map(job, range(args.runs)))
    finally:
        for b in busy:
            b.kill()
            b.wait()
    return runs


def main() -> int:
    args = parse_args()
    # SIGTERM ends the loop through repeat's finally, which stops the busy loops
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory() as tmp:
        runs = repeat(args, Path(tmp))
        cmd = " ".join(command(Path("OUT"), args.episodes, None)[1:])
    summary = {"runs": len(runs), "failures": sum(not r["ok"] for r in runs),
               "aborts": sum(r["aborted"] for r in runs), "load": args.load,
               "starve": args.starve, "parallel": args.parallel, "episodes": args.episodes,
               "cpus": os.cpu_count(),
               "loadavg_1min_end": os.getloadavg()[0],
               "exit_codes": sorted({str(r["rc"]) for r in runs}),
               "mean_seconds": sum(r["seconds"] for r in runs) / max(len(runs), 1),
               "command": cmd}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({**summary, "failed_tails": [
            r["tail"] for r in runs if not r["ok"]]}, indent=1) + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
