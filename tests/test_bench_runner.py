"""metarobust.bench.runner: ``run`` prints each subject's tables and returns their rows
(tiny sizes; the data and the MAML step stubbed where they would take long)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from metarobust.bench import runner
from metarobust.bench.maml import maml_batch

TINY = dict(ways=2, shots=1, queries=1, batch=2, tasks=2, dim=4, repeats=1, min_time=1e-4)


@pytest.fixture
def tiny_data(monkeypatch):
    """40 random 12x12 images in 10 classes instead of Omniglot; MAML's benchmark stubbed
    (tested in test_bench_maml.py), recording its arguments."""
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 12, 12), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    monkeypatch.setattr(runner, "omniglot_like", lambda root=None: (images, labels, "tiny"))
    monkeypatch.setattr(runner, "maml_batch",
                        lambda t, w, k, q, **kw: maml_batch(t, w, k, q, images=images,
                                                            labels=labels))
    calls = []
    monkeypatch.setattr(runner, "bench_maml", lambda batch, **kw: calls.append((batch, kw))
                        or [])
    return calls


def test_unknown_subject_is_named():
    with pytest.raises(ValueError, match="what: expected one of sampler, kernels"):
        runner.run("everything")


def test_kernels_uses_the_shape_the_sizes_describe():
    out = io.StringIO()
    result = runner.run("kernels", file=out, **TINY)
    assert set(result) == {"kernels", "kernel_summary", "kernel_overhead_probe"}
    assert {r["shape (B,N,K,Q,D)"] for r in result["kernels"]} == {"(2,2,1,2,4)"}
    text = out.getvalue()
    assert "Kernels: mean prototypes" in text and "Diagnostic: fused op" in text
    assert "Targets" not in text  # no target covers this shape


def test_kernel_shapes():
    assert runner._kernel_shapes(None, None, None, None, None) == runner.DEFAULT_KERNEL_SHAPES
    assert runner._kernel_shapes(None, 10, None, 0, None) == ((32, 10, 5, 0, 64),)
    assert runner._kernel_shapes(4, None, 2, None, 8) == ((4, 5, 2, 75, 8),)


def test_all_runs_every_subject_with_its_own_sizes(tiny_data):
    out = io.StringIO()
    result = runner.run("all", file=out, **TINY)
    assert {"sampler_memory", "sampler", "sampler_summary", "sampler_alloc_probe", "kernels",
            "kernel_summary", "kernel_overhead_probe", "maml", "maml_summary", "corruptions",
            "corruption_summary"} <= set(result)
    assert {r["setting"] for r in result["sampler"]} == {"2w1s1q"}
    # the MAML meta-batch once replaced `batch`, and the corruptions then failed
    assert {r["batch"] for r in result["sampler"] + result["corruptions"]} == {2}
    ((maml_batch_, kw),) = tiny_data
    assert maml_batch_.support_x.shape[:2] == (2, 2) and kw["repeats"] == 1
    assert "path auto ->" in out.getvalue()


def test_no_diagnostics_skips_the_probes(tiny_data):
    result = runner.run("sampler", diagnostics=False, file=io.StringIO(), **TINY)
    assert set(result) == {"sampler", "sampler_summary"}
