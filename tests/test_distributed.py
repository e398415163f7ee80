"""Data-parallel training under torchrun (gloo on CPU, 2 processes): the same parameters and
BatchNorm statistics as one process with the same global meta-batch, resume through the
command line, a clear error for a meta-batch that does not split, a failed or stalled
rank ending the job instead of hanging, and successful jobs ending with status 0 on every
rank (the process group destroyed at teardown, none of its threads left to the
interpreter's finalization).

The single-process references use ``chunk_size = meta_batch / 2``, so each forward pass
groups the same tasks as a rank does. A learner's float rounding depends on how many tasks
share a forward pass (oneDNN picks kernels by batch size; up to ~1e-3 relative on Conv-4
gradients, exactly as when ``chunk_size`` changes), and Adam's first steps (``lr *
sign(g)``) turn rounding noise on near-zero gradients (conv biases before BatchNorm, whose
exact gradient is 0) into differences of ``lr``. With matched chunks only the distributed
machinery is compared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarobust import distributed
from metarobust.checkpoint import load_checkpoint
from metarobust.config import TrainConfig
from metarobust.train import Trainer

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

BASE = dict(dataset="glyphs", glyph_classes=30, ways=5, shots=1, device="cpu", threads=1,
            seed=3, test_queries=3, val_episodes=10, checkpoint_every=3)
PROTO = dict(BASE, learner="protonet", queries=3, meta_batch=2, episodes=8, val_every=2)
# chunk_size 2: each rank's 2 tasks in one forward pass, as in the reference (MAML's CPU
# loop otherwise backs up one task at a time, a different summation order)
# classifier pre-training (each rank 4 of the 8 images of a step)
PRETRAIN = dict(BASE, learner="protonet", queries=3, meta_batch=2, steps=4, val_every=2,
                pretrain_share=1.0, batch_size=8)
# a robust objective (TRADES): its own backward, synchronised over the ranks
TRADES = dict(BASE, learner="protonet", queries=3, meta_batch=2, steps=3, val_every=100,
              adversarial=True, adv_method="trades", adv_steps=2)
MAML = dict(BASE, learner="maml", queries=2, meta_batch=4, episodes=12, inner_steps=1,
            val_every=100, chunk_size=2)

WORKER = """
import glob, json, os, sys, time
import torch
from metarobust import distributed
from metarobust.config import TrainConfig
from metarobust.train import Trainer

try:
    for cfg, out, fail in json.loads(sys.argv[1]):
        trainer = Trainer(TrainConfig(**cfg), out, progress=False)
        rank = trainer.dist.rank
        if fail and rank == 1:
            original, calls = trainer.learner.meta_backward, [0]
            def broken(batch, ways):
                calls[0] += 1
                if calls[0] == 2:
                    if fail == "raise":
                        raise RuntimeError("injected failure on rank 1")
                    time.sleep(3600)
                return original(batch, ways)
            trainer.learner.meta_backward = broken
        result = trainer.fit()
        torch.save({"model": trainer.learner.state_dict(), "result": result},
                   f"{out}/rank{rank}.pt")
finally:
    distributed.teardown()
    # the threads left once the process group is gone (Linux names them in /proc)
    tasks = glob.glob("/proc/self/task/*/comm")
    names = [open(t).read().strip() for t in tasks]
    with open(f"{sys.argv[2]}/threads{os.environ['RANK']}.json", "w") as f:
        json.dump(names if tasks else None, f)
"""


def torchrun(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 ARGS`` (a free port
    on localhost), one torch thread per process. Past ``timeout`` the launcher and its
    workers (its own session) are killed and the test fails: the job hung."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        full_env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout}s:\n{out[-2000:]}{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_worker(tmp_path: Path, jobs: list, timeout: float, **env: str):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return torchrun([str(script), json.dumps(jobs), str(tmp_path)], timeout, **env)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def reference(cfg: dict, out: Path, stop_at: int | None = None) -> Trainer:
    """One process, forward passes grouping the tasks (BatchNorm statistics: the
    pre-training images) a rank of 2 would see."""
    cfg = {**cfg, "chunk_size": cfg["meta_batch"] // 2}
    trainer = Trainer(TrainConfig(**cfg), out, progress=False)
    if trainer.pretraining is not None:
        trainer.pretraining.bn_groups = 2
    trainer.fit(stop_at=stop_at)
    return trainer


def assert_same_state(got: dict, want: dict, atol: float = 1e-5,
                      skip: tuple[str, ...] = ()) -> None:
    assert got.keys() == want.keys()
    for name in want:
        if name.endswith(skip):
            continue
        if want[name].is_floating_point():
            torch.testing.assert_close(got[name], want[name], atol=atol, rtol=0,
                                       msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """ProtoNet and second-order MAML trained by 2 gloo ranks in one torchrun job."""
    tmp = tmp_path_factory.mktemp("dist")
    jobs = [[PROTO, str(tmp / "proto"), None], [MAML, str(tmp / "maml"), None],
            [PRETRAIN, str(tmp / "pretrain"), None], [TRADES, str(tmp / "trades"), None]]
    proc = run_worker(tmp, jobs, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


@pytest.mark.parametrize("name, cfg", [("proto", PROTO), ("maml", MAML),
                                       ("pretrain", PRETRAIN)])
def test_two_ranks_match_one_process(two_rank_runs, tmp_path, one_thread, name, cfg):
    ref = reference(cfg, tmp_path / "ref")
    want = ref.learner.state_dict()
    ranks = [torch.load(two_rank_runs / name / f"rank{r}.pt", weights_only=True)
             for r in (0, 1)]
    # every rank holds the same model, bit for bit (BatchNorm running statistics included)
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    assert ranks[0]["result"] == ranks[1]["result"]
    # ... and it is one process's model with the same global meta-batch, to float tolerance
    # Pre-training's BatchNorm over a batch of images leaves the convolution biases before
    # it a gradient of rounding noise only (BatchNorm subtracts the mean), which Adam scales
    # up to steps of lr: those biases, and the running means they shift, are compared to
    # that tolerance; everything else to float tolerance.
    skip = (".0.bias", "running_mean") if name == "pretrain" else ()
    assert_same_state(ranks[0]["model"], want, skip=skip)
    for key in (k for k in want if k.endswith(skip)):
        torch.testing.assert_close(ranks[0]["model"][key], want[key], rtol=0,
                                   atol=3 * cfg["steps"] * 1e-3, msg=key)
    if name == "proto":  # running statistics exist and were merged, not left per rank
        assert int(want["backbone.blocks.0.1.num_batches_tracked"]) == cfg["episodes"]
    saved = load_checkpoint(two_rank_runs / name / "last.pt")
    assert saved["step"] == ref.step == (cfg.get("steps")
                                          or cfg["episodes"] // cfg["meta_batch"])
    if name == "pretrain":  # the head the ranks trained together is one process's head
        assert saved["pretrain_steps"] == 4
        assert_same_state(saved["pretrain_head"], ref.pretraining.head.state_dict())
    assert_same_state(saved["model"], want, skip=skip)
    # rank 0 alone wrote the run directory; metrics are global means
    lines = [json.loads(x) for x in (two_rank_runs / name / "metrics.jsonl").read_text()
             .splitlines()]
    ref_lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text()
                 .splitlines()]
    assert [sorted(x) for x in lines] == [sorted(x) for x in ref_lines]
    # validation reads the running means, which lag the biases above (pre-training)
    val_tol = 0.02 if name == "pretrain" else 1e-4
    for got, exp in zip(lines, ref_lines):
        for key, tol in (("loss", 1e-4), ("accuracy", 1e-4), ("val_accuracy", val_tol)):
            if key in exp:
                assert got[key] == pytest.approx(exp[key], abs=tol), key
    assert ranks[0]["result"]["best_val_accuracy"] == pytest.approx(
        ref.best, abs=val_tol if name == "pretrain" else 1e-6)


def test_a_robust_objective_keeps_the_ranks_in_step(two_rank_runs):
    """TRADES' backward is averaged over the ranks like meta_backward: both ranks end with
    the same model (each rank attacks its own tasks, so no one-process reference), and the
    model moved."""
    ranks = [torch.load(two_rank_runs / "trades" / f"rank{r}.pt", weights_only=True)
             for r in (0, 1)]
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    torch.manual_seed(TRADES["seed"])
    start = Trainer(TrainConfig(**TRADES), two_rank_runs / "trades_start", progress=False)
    moved = [not torch.equal(v, ranks[0]["model"][k])
             for k, v in start.learner.state_dict().items() if v.is_floating_point()]
    assert any(moved)
    assert ranks[0]["result"]["steps"] == 3


def test_teardown_ends_the_process_group_threads(two_rank_runs):
    """After a run, ``teardown`` really destroys the process group: gloo's threads are
    joined, none is left to drop a collective's tensor (taking the GIL) while the
    interpreter finalizes, which aborts a process that has succeeded. The trainer's
    optimiser imports torch._dynamo after the group exists, and with it a torch module
    whose default arguments would otherwise keep the group alive."""
    for r in (0, 1):
        names = json.loads((two_rank_runs / f"threads{r}.json").read_text())
        if names is None:
            pytest.skip("no /proc/self/task to list threads")
        assert not [n for n in names if "gloo" in n], names


EXIT_WITHOUT_TEARDOWN = """
import atexit, glob, json
def record():  # registered first, so it runs after metarobust's exit hook
    names = []
    for task in glob.glob("/proc/self/task/*/comm"):
        try:
            names.append(open(task).read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    print(json.dumps(names), flush=True)
atexit.register(record)
import torch
from metarobust.distributed import Distributed
Distributed(torch.device("cpu"))
torch.optim.Adam(torch.nn.Linear(2, 2).parameters())  # imports torch._dynamo
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads in /proc")
def test_a_group_left_open_is_destroyed_at_exit():
    """A script that joins the group through :class:`Distributed` and never calls
    ``teardown`` has it destroyed at interpreter exit, before finalization."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_TEARDOWN], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = json.loads(proc.stdout.splitlines()[-1])
    assert not [n for n in names if "gloo" in n], names


def test_torchrun_cli_resumes_a_single_process_run(tmp_path, one_thread):
    """`torchrun -m metarobust train` resumes a run begun by one process: rank 0 reads
    last.pt and every rank continues from it; the result line is printed once."""
    straight = reference(PROTO, tmp_path / "straight")
    reference(PROTO, tmp_path / "run", stop_at=1)
    proc = torchrun(["-m", "metarobust", "train", "--config", str(tmp_path / "run" /
                                                                   "config.toml"),
                     "--out", str(tmp_path / "run")], timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith('{"run"')]
    assert len(results) == 1 and json.loads(results[0])["steps"] == 4
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["step"] == 4
    assert_same_state(saved["model"], straight.learner.state_dict())


def test_meta_batch_must_split_over_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"meta_batch: 3 .* world size 2"):
        Trainer(TrainConfig(**{**PROTO, "meta_batch": 3}), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"meta_batch: 1 .*world size 2.*--meta-batch"):
        Trainer(TrainConfig(**{**PROTO, "meta_batch": None}), tmp_path / "run",
                progress=False)
    assert not torch.distributed.is_initialized()
    assert distributed.local_batch(8, 4) == 2
    with pytest.raises(ValueError, match="meta_batch: 6 .* world size 4"):
        distributed.local_batch(6, 4)


@pytest.mark.parametrize("fail", ["raise", "stall"])
def test_a_failed_rank_ends_the_job(tmp_path, fail):
    """Rank 1 raises (torchrun stops the job) or stalls for an hour in its second step (rank
    0's collective times out after 5 s): the job exits non-zero instead of hanging (most of
    the test's time limit is two Python processes importing torch on a busy machine)."""
    cfg = dict(PROTO, episodes=40, val_every=100)
    proc = run_worker(tmp_path, [[cfg, str(tmp_path / "run"), fail]], timeout=180,
                      METAROBUST_DIST_TIMEOUT="5")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    if fail == "raise":
        assert "injected failure on rank 1" in output
    else:
        assert "DistributedError" in output and "rank 0 of 2" in output, output[-3000:]


# `metarobust` with the gloo threads demoted before the last collective (see the script)
DEMOTING_CLI = REPO / "experiments" / "scripts" / "starved_gloo_cli.py"
BUSY = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE") or not os.path.isdir("/proc/self/task"),
                    reason="needs Linux scheduling classes")
def test_successful_runs_exit_cleanly_under_load(tmp_path):
    """Short two-process `metarobust train` jobs, two at a time beside busy loops, their
    gloo threads starved at the end: every job exits 0 with its result line printed
    (before the process group was really destroyed at teardown, about half aborted with
    "terminate called without an active exception" after printing)."""
    from concurrent.futures import ThreadPoolExecutor

    cpu = max(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(cpu)]) for _ in range(2)]

    def job(i: int) -> subprocess.CompletedProcess:
        return torchrun([str(DEMOTING_CLI), str(cpu), "train", "--learner", "protonet",
                         "--dataset", "glyphs", "--glyph-classes", "30", "--ways", "5",
                         "--shots", "1", "--queries", "3", "--meta-batch", "2",
                         "--episodes", "8", "--val-episodes", "10", "--device", "cpu",
                         "--out", str(tmp_path / f"run{i}")], timeout=240,
                        PYTHONFAULTHANDLER="1")

    try:
        with ThreadPoolExecutor(2) as pool:
            procs = list(pool.map(job, range(4)))
    finally:
        for b in busy:
            b.kill()
            b.wait()
    for proc in procs:
        results = [x for x in proc.stdout.splitlines() if x.startswith('{"run"')]
        assert proc.returncode == 0 and len(results) == 1, \
            proc.stdout[-2000:] + proc.stderr[-3000:]

