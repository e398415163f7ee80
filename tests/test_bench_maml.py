"""metarobust.bench.maml: every candidate's meta-gradient is the reference's, the check
catches one that is not, and the tables add up (a tiny meta-batch of Conv-4 tasks)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from metarobust.bench import maml as bm
from metarobust.bench import maml_reference

TASKS, WAYS = 2, 2


@pytest.fixture(scope="module")
def batch():
    """Two 2-way 1-shot 1-query tasks of 28x28 random pixels (the Conv-4's input size)."""
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    return bm.maml_batch(TASKS, WAYS, 1, 1, images=images, labels=labels)


def test_maml_batch_shapes(batch):
    assert batch.support_x.shape == (TASKS, WAYS, 1, 28, 28)
    assert batch.query_x.shape == (TASKS, WAYS, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32
    assert float(batch.support_x.max()) <= 1.0


@pytest.mark.parametrize("order, names", [
    ("second", ["loop", "threads", "plain", "unfused"]),
    ("first", ["loop", "vmap", "plain"]),
])
def test_candidates_meta_gradients_equal_the_reference(batch, order, names):
    errors = bm.check_maml_agree(batch, order, names, ways=WAYS)
    assert set(errors) == set(names)
    assert all(0 <= e < 1e-9 for e in errors.values()), errors


def test_check_catches_a_candidate_that_differs(batch, monkeypatch):
    class Off(maml_reference.ReferenceMAML):
        """The ``plain`` candidate with a larger inner learning rate."""

        def __init__(self, net, **kw):
            super().__init__(net, **kw)
            if self.style == "functional":
                self.inner_lr *= 1.5

    monkeypatch.setattr(bm, "ReferenceMAML", Off)
    with pytest.raises(AssertionError, match="maml candidate plain"):
        bm.check_maml_agree(batch, "first", ["plain"], ways=WAYS)


def test_grad_error_scales_by_the_largest_gradient():
    ref = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.0, 0.0])}

    def params(a, b):
        out = {}
        for n, g in (("a", a), ("b", b)):
            p = torch.nn.Parameter(torch.zeros(2))
            p.grad = None if g is None else torch.tensor(g)
            out[n] = p
        return out

    # b's scale is 1% of the largest |gradient| (2): an error of 1e-3 is 5% of it
    assert bm._grad_error("x", "first", params([1.0, -2.0], [1e-3, 0.0]), ref,
                          0.1) == pytest.approx(0.05)
    with pytest.raises(AssertionError, match="meta-gradient of b"):
        bm._grad_error("x", "first", params([1.0, -2.0], [1e-3, 0.0]), ref, 0.01)
    with pytest.raises(AssertionError, match="max abs error inf"):
        bm._grad_error("x", "first", params([1.0, -2.0], None), ref, 0.1)
    with pytest.raises(AssertionError, match="parameters differ"):
        bm._grad_error("x", "first", {"a": params([1.0, -2.0], None)["a"]}, ref, 0.1)


def test_bad_order_or_candidate_is_named(batch):
    with pytest.raises(ValueError, match="order"):
        bm.maml_candidates(batch, "third", ["loop"])
    with pytest.raises(ValueError, match="'higher'"):
        bm.maml_candidates(batch, "first", ["higher"])


def test_auto_path_on_the_cpu_follows_torch_threads():
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert bm.maml_auto_path("cpu", 32) == "loop"
        torch.set_num_threads(2)
        assert bm.maml_auto_path("cpu", 32) == "threads"
        assert bm.maml_auto_path("cpu", 1) == "loop"
    finally:
        torch.set_num_threads(prev)


def test_bench_maml_rows_and_summary(batch):
    auto = bm.maml_auto_path("cpu", TASKS)
    rows = bm.bench_maml(batch, orders=["first"], names=[auto, "reference"], repeats=1,
                         memory=False)
    assert [r["candidate"] for r in rows] == [f"metarobust {auto} (auto)",
                                              "reference (learn2learn-style)"]
    for r in rows:
        assert r["tasks"] == TASKS and r["order"] == "first"
        assert r["tasks/s"] == pytest.approx(TASKS / r["s/step"])
        assert math.isnan(r["peak MiB"])
        assert float(r["grad err"]) < 1e-9
    assert rows[1]["vs reference"] == 1.0
    (summary,) = bm.maml_summary(rows)
    assert summary["auto path"] == auto
    assert summary["auto/reference"] == pytest.approx(rows[0]["tasks/s"] / rows[1]["tasks/s"])


def test_maml_summary_needs_the_reference_and_the_auto_path():
    row = {"order": "second", "tasks": 4, "tasks/s": 1.0, "peak MiB": 1.0}
    assert bm.maml_summary([{**row, "candidate": "metarobust loop (auto)"}]) == []
    assert bm.maml_summary([{**row, "candidate": "reference (learn2learn-style)"},
                            {**row, "candidate": "metarobust loop"}]) == []


def test_labels():
    assert bm._maml_label("loop", "loop") == "metarobust loop (auto)"
    assert bm._maml_label("vmap", "threads") == "metarobust vmap"
    assert bm._maml_label("unfused", "threads") == "metarobust threads, torch first block"
    assert bm._maml_label("reference", "loop").startswith("reference")


def test_peak_memory_in_a_subprocess(batch):
    mib = bm.maml_peak_memory(batch, "first", "plain", WAYS)
    if os.path.exists("/proc/self/clear_refs"):
        assert 0 <= mib < 1024
    else:
        assert math.isnan(mib) or mib >= 0
