"""Bad input to metarobust._core: a ValueError or TypeError (a MemoryError where memory is
what is missing) whose message starts with the argument's name, never a panic
(PanicException), a crash, a silent wrong result or an unnamed error."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metarobust as mr
from metarobust import _core as c

ALLOWED = (ValueError, TypeError, MemoryError)


def raises(exc, name: str, fn, *args, **kwargs) -> str:
    """Calls `fn`, which must raise `exc` with a message that starts with `name:`."""
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert re.match(rf"{re.escape(name)}\b", msg), f"{msg!r} does not start with {name!r}"
    return msg


def f32(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(np.float32)


def misaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    out = raw.view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


EMB, LABELS = np.zeros((1, 2, 3), np.float32), np.array([[0, 1]], np.int64)


# ---------------------------------------------------------------- panics

@pytest.mark.parametrize("detached", [False, True])
def test_a_panic_is_a_runtime_error_naming_the_function(detached):
    with pytest.raises(RuntimeError, match=r"^internal error in metarobust\._core\."
                                           r"_panic_for_tests: on purpose$"):
        c._panic_for_tests("on purpose", detached=detached)


def test_a_panic_is_an_exception_not_a_base_exception():
    try:
        c._panic_for_tests("caught")
    except Exception as e:  # PanicException would pass through this
        assert type(e) is RuntimeError


# ---------------------------------------------------------------- sizes before allocation

def test_ways_above_the_support_items_is_refused_before_allocating():
    raises(ValueError, "ways", c.prototypes, EMB, LABELS, 2**31)
    raises(ValueError, "ways", c.proto_distances, EMB, LABELS, EMB, 2**40)
    raises(ValueError, "ways", mr.ops.prototypes, torch.zeros(2, 3), torch.tensor([0, 1]),
           ways=2**31)


def test_outputs_too_large_for_any_machine_are_refused():
    # 2**40 distances of 4 bytes: 4 TiB.
    x = np.zeros((1, 2**20, 1), np.float32)
    raises(ValueError, "x", c.pairwise_distances, x, x)
    raises(ValueError, "per_class", c.render_glyphs, 0, np.arange(2**10), 2**60, 512)


@pytest.mark.skipif(physical_memory() > 2**36, reason="64 GiB of glyphs would fit here")
def test_glyph_outputs_beyond_the_machines_memory_are_refused_before_allocating():
    raises(ValueError, "per_class", c.render_glyphs, 0, np.array([0]), 2**30, 8)
    raises(ValueError, "num_classes, per_class", mr.data.glyphs, num_classes=1,
           per_class=2**30, image_size=8)


def test_sizes_that_overflow_are_errors_not_empty_fills():
    images = np.zeros((12, 1, 2, 2), np.uint8)
    labels = np.repeat(np.arange(4), 3).astype(np.int64)
    for queries in (0, 1):
        s = c.SamplerCore(images, labels, 2, 1, queries, 0)
        empty = [np.zeros((0, 2, 1, 2, 2), np.uint8), np.zeros((0, 2), np.int64),
                 np.zeros((0, 2 * queries, 1, 2, 2), np.uint8),
                 np.zeros((0, 2 * queries), np.int64), np.zeros((0, 2), np.int64)]
        raises(ValueError, "support_x", s.fill, 0, 2**62, *empty)


def test_a_zero_width_gradient_is_a_named_error():
    raises(ValueError, "grad_output", c.mean_prototypes_backward,
           np.zeros((1, 2, 0), np.float32), LABELS, 2)


def test_more_classes_than_support_items_names_support_not_ways():
    msg = raises(ValueError, "support", c.mean_prototypes_backward, f32(1, 3, 2), LABELS, 2)
    assert "ways" not in msg


# ---------------------------------------------------------------- borrows

def sampler_and_outputs(dtype=np.float32):
    images = np.zeros((12, 1, 2, 2), np.uint8)
    labels = np.repeat(np.arange(4), 3).astype(np.int64)
    s = c.SamplerCore(images, labels, 2, 1, 1, 0)
    outs = [np.zeros((3, 2, 1, 2, 2), dtype), np.zeros((3, 2), np.int64),
            np.zeros((3, 2, 1, 2, 2), dtype), np.zeros((3, 2), np.int64),
            np.zeros((3, 2), np.int64)]
    return s, images, outs


def test_read_only_outputs_are_named():
    s, _, outs = sampler_and_outputs()
    for i, name in enumerate(["support_x", "support_y", "query_x", "query_y", "classes"]):
        bad = list(outs)
        bad[i] = read_only(outs[i])
        assert "read-only" in raises(ValueError, name, s.fill, 0, 3, *bad)
    imgs = np.zeros((2, 1, 8, 8), np.uint8)
    raises(ValueError, "out", c.corrupt_into, imgs, read_only(imgs), "thin", 1, 0, 0, "dark")
    x, w, v = f32(2, 1, 6, 6), f32(4, 1, 3, 3), np.ones(4, np.float32)
    raises(ValueError, "out", c.conv_block_forward, x, w, v, v, v, 1e-5,
           read_only(np.zeros((2, 3, 3, 4), np.float32)))
    raises(ValueError, "out", c.strided_block_forward, x, w, v, v, v, 1e-5,
           read_only(np.zeros((2, 4, 3, 3), np.float32)))


def test_outputs_sharing_memory_are_named():
    s, images, outs = sampler_and_outputs()
    sy, qx, qy, cl = outs[1], outs[2], outs[3], outs[4]
    msg = raises(ValueError, "support_y", s.fill, 0, 3, outs[0], sy, qx, sy, cl)
    assert "the same array as query_y" in msg
    raises(ValueError, "support_x", s.fill, 0, 3, qx, sy, qx, qy, cl)
    # An output over the sampler's own images.
    s2, images, outs = sampler_and_outputs(np.uint8)
    view = images.reshape(-1)[:24].reshape(3, 2, 1, 2, 2)
    assert "images" in raises(ValueError, "support_x", s2.fill, 0, 3, view, *outs[1:])
    imgs = np.zeros((2, 1, 8, 8), np.uint8)
    assert "images" in raises(ValueError, "out", c.corrupt_into, imgs, imgs, "thin", 1, 0, 0,
                              "dark")
    both = np.zeros((3, 1, 8, 8), np.uint8)
    raises(ValueError, "out", c.corrupt_into, both[:2], both[1:], "thin", 1, 0, 0, "dark")
    x, w, v = f32(2, 1, 6, 6), f32(4, 1, 3, 3), np.ones(4, np.float32)
    msg = raises(ValueError, "out", c.strided_block_forward, x, w, v, v, v, 1e-5,
                 x.reshape(2, 4, 3, 3))
    assert "the same array as x" in msg


def test_unaligned_arrays_are_named():
    raises(ValueError, "emb", c.prototypes, misaligned(EMB), LABELS, 2)
    raises(ValueError, "labels", c.prototypes, EMB, misaligned(LABELS), 2)
    s, _, outs = sampler_and_outputs()
    raises(ValueError, "query_y", s.fill, 0, 3, *outs[:3], misaligned(outs[3]), outs[4])


# ---------------------------------------------------------------- values

BLOCK = dict(x=f32(2, 1, 6, 6), weight=f32(4, 1, 3, 3) - 0.5, bias=f32(4), gamma=f32(4) + 0.5,
             beta=f32(4))


def block_calls():
    """`(function, kwargs)` of valid calls of the four fused-block entry points."""
    b = dict(BLOCK)
    out = np.zeros((2, 3, 3, 4), np.float32)
    mean, var = (np.array(v, np.float32) for v in c.conv_block_forward(**b, eps=1e-5, out=out))
    sout = np.zeros((2, 4, 3, 3), np.float32)
    _, svar = c.strided_block_forward(**b, eps=1e-5, out=sout)
    yield c.conv_block_forward, dict(b, eps=1e-5, out=out)
    yield c.conv_block_backward, dict(b, mean=mean, var=var, eps=1e-5, dout=f32(2, 3, 3, 4))
    yield c.strided_block_forward, dict(b, eps=1e-5, out=sout)
    yield c.strided_block_backward, dict(x=b["x"], weight=b["weight"], gamma=b["gamma"],
                                         var=np.array(svar, np.float32), eps=1e-5, out=sout,
                                         dout=f32(2, 4, 3, 3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_block_inputs_are_named(bad):
    for fn, kw in block_calls():
        for name, value in kw.items():
            if not isinstance(value, np.ndarray) or name == "out" and "forward" in fn.__name__:
                continue
            arr = value.copy()
            arr.flat[arr.size // 2] = bad
            raises(ValueError, name, fn, **dict(kw, **{name: arr}))
        for eps in (bad, 0.0, -1e-5, 1e300, 1e-50):
            raises(ValueError, "eps", fn, **dict(kw, eps=eps))


def test_negative_variances_are_refused():
    for fn, kw in block_calls():
        if "var" in kw:
            var = kw["var"].copy()
            var[1] = -0.5
            assert ">= 0" in raises(ValueError, "var", fn, **dict(kw, var=var))


def test_non_finite_gradients_and_prototypes_are_named():
    grad = f32(1, 2, 3)
    grad[0, 1, 2] = np.nan
    raises(ValueError, "grad_output", c.mean_prototypes_backward, grad, LABELS, 2)
    support, query = f32(1, 2, 3), f32(1, 4, 3)
    _, protos = c.proto_distances(support, LABELS, query, 2)
    protos[0, 0, 0] = np.inf
    raises(ValueError, "protos", c.proto_distances_backward, support, LABELS, query, protos,
           f32(1, 4, 2), 2)


def test_scalars_are_converted_without_silent_changes():
    raises(ValueError, "ways", c.prototypes, EMB, LABELS, 2**70)
    raises(TypeError, "ways", c.prototypes, EMB, LABELS, True)
    raises(TypeError, "method", c.prototypes, EMB, LABELS, 2, None)
    raises(ValueError, "seed", c.render_glyphs, -1, np.array([0]), 1, 8)
    raises(ValueError, "seed", c.render_glyphs, 2**64, np.array([0]), 1, 8)
    imgs = np.zeros((1, 1, 8, 8), np.uint8)
    raises(ValueError, "name", c.corrupt_into, imgs, imgs.copy(), "\ud800", 1, 0, 0, "dark")
    msg = raises(ValueError, "name", c.corrupt_into, imgs, imgs.copy(), "blur", 1, 0, 0, "dark")
    assert "corruption:" not in msg
    raises(TypeError, "parallel", c.strided_block_forward, *BLOCK.values(), 1e-5,
           np.zeros((2, 4, 3, 3), np.float32), 1)
    raises(ValueError, "mean", c.SamplerCore, np.zeros((4, 1, 2, 2), np.uint8),
           np.arange(4, dtype=np.int64), 2, 1, 0, 0, mean=[1e300])


def test_shape_errors_name_an_argument_not_a_struct():
    x, w, v = f32(0, 1, 6, 6), f32(4, 1, 3, 3), np.ones(4, np.float32)
    msg = raises(ValueError, "x", c.conv_block_forward, x, w, v, v, v, 1e-5,
                 np.zeros((0, 3, 3, 4), np.float32))
    assert "BlockShape" not in msg


# ---------------------------------------------------------------- fuzzing

VALUES = st.one_of(
    st.integers(-3, 5), st.sampled_from([2**31, 2**62, 2**64, -2**63, 2**70, True]),
    st.floats(), st.text(max_size=3), st.none(), st.just(object()),
    st.builds(lambda n, d: np.zeros((n,) * d, np.float32), st.integers(0, 3), st.integers(0, 4)),
)


def fuzz_cases():
    emb, query = f32(1, 4, 3), f32(1, 5, 3)
    lab = np.array([[0, 1, 0, 1]], np.int64)
    _, protos = c.proto_distances(emb, lab, query, 2)
    return [
        (c.prototypes, dict(emb=emb, labels=lab, ways=2, method="median")),
        (c.mean_prototypes_backward, dict(grad_output=f32(1, 2, 3), labels=lab, support=4)),
        (c.pairwise_distances_backward, dict(x=emb, y=query, grad_output=f32(1, 4, 5))),
        (c.proto_distances_backward, dict(support=emb, labels=lab, query=query, protos=protos,
                                          grad_output=f32(1, 5, 2), ways=2)),
        (c.render_glyphs, dict(seed=0, classes=np.array([0, 3]), per_class=2, image_size=8)),
        (c.corrupt_into, dict(images=np.zeros((2, 1, 8, 8), np.uint8),
                              out=np.zeros((2, 1, 8, 8), np.uint8), name="thin", severity=2,
                              seed=0, index=0, ink="dark")),
        *block_calls(),
    ]


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_arguments_give_named_errors(data):
    fn, kw = data.draw(st.sampled_from(fuzz_cases()), label="function")
    for _ in range(data.draw(st.integers(1, 2))):
        name = data.draw(st.sampled_from(sorted(kw)), label="argument")
        kw = dict(kw, **{name: data.draw(VALUES, label=name)})
    try:
        fn(**kw)
    except ALLOWED as e:
        assert str(e).startswith(tuple(kw)), f"{fn.__name__}: {e!r}"


_SCRATCH = r"""
import resource, sys
import numpy as np
from metarobust import _core
images = np.random.default_rng(0).random((1, 1, 2048, 8192), dtype=np.float32)
out = np.empty_like(images)
{setup}
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
try:
    {call}
except MemoryError as e:
    print("MemoryError:", e)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
@pytest.mark.parametrize("setup, call", [
    ("", '_core.corrupt_into(images, out, "rotate", 3, 0, 0, "dark")'),
    ("u8 = (images * 255).astype(np.uint8)\n"
     "s = _core.SamplerCore(u8, np.arange(1), 1, 1, 0, 0, None, None, None, 'elastic', 3, "
     "'support', 'dark', 0)\n"
     "bufs = (np.empty((1, 1, 1, 2048, 8192), np.uint8), np.empty((1, 1), np.int64), "
     "np.empty((1, 0, 1, 2048, 8192), np.uint8), np.empty((1, 0), np.int64), "
     "np.empty((1, 1), np.int64))",
     "s.fill(0, 1, *bufs)"),
])
def test_a_refused_scratch_buffer_is_a_memory_error_not_an_abort(setup, call):
    # a kernel's scratch grows inside loops that return no error: where the allocator
    # refuses it, the call must raise a MemoryError naming the images, not abort the process
    code = _SCRATCH.replace("{setup}", setup).replace("{call}", call)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("MemoryError: images: too large for this machine"), \
        (res.stdout, res.stderr[-1000:])
    assert "panicked" not in res.stderr
