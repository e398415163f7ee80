"""Targets: the distance kernels of ``_core`` (pairwise distances, the fused mean
prototypes + distances, and both backwards), against NumPy distances and float64 torch
autograd."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from hypothesis import strategies as st

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Int
from ..values import ints, normal, num
from ._common import arr_type, class_labels, close, dims, label_breaks, seeds, small

FLOATS = ("float32", "float64")
METRICS = ("sqeuclidean", "cosine")
COSINE_EPS = 1e-8


def ref_distances(x, y, metric):
    """Distances ``(B, Q, N)`` in float64; cosine as ``1 - cos`` with norms clamped to
    1e-8 (the torch path's ``F.normalize``)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if metric == "sqeuclidean":
        return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    yn = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-8)
    return 1 - np.einsum("bqd,bnd->bqn", xn, yn)


def torch_distances(x, y, metric):
    if metric == "sqeuclidean":
        return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return 1 - xn @ yn.transpose(1, 2)


def check_distance_values(what, got, x, y, metric):
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    want = ref_distances(x64, y64, metric)
    eps = 1e-5 if np.asarray(x).dtype == np.float32 else 1e-11
    if metric == "sqeuclidean":
        nx, ny = (x64 ** 2).sum(-1), (y64 ** 2).sum(-1)
        atol = eps * (1 + nx[:, :, None] + ny[:, None, :])
        assert (np.asarray(got) >= 0).all(), f"{what}: a negative squared distance"
    else:
        atol = 10 * eps
    close(what, got, want, eps, atol)


def check_pairwise(result, args, meta):
    x, y = args["x"], args["y"]
    arr_type("distances", result, x.dtype, (x.shape[0], x.shape[1], y.shape[1]))
    check_distance_values("distances", result, x, y, str(args["metric"]))


def cosine_terms(g, *rows):
    """How large the terms of a cosine gradient get (``|g| * n / |v|`` for the shortest
    non-zero row ``v``): they cancel, so their size sets the rounding error."""
    g = np.abs(np.asarray(g, np.float64)).max(initial=0)
    norms = np.concatenate([np.linalg.norm(np.asarray(r, np.float64), axis=-1).ravel()
                            for r in rows])
    norms = norms[norms > 0]
    n = max(np.asarray(r).shape[-2] for r in rows)
    return float(g * n / norms.min()) if norms.size else 0.0


def check_grads(what, got, want, dtype, terms=0.0):
    eps = 1e-4 if dtype == np.float32 else 1e-9
    scale = np.abs(want).max(initial=0)
    close(what, got, want, eps, eps * (1 + scale + terms))


def check_pairwise_backward(result, args, meta):
    x, y, g = args["x"], args["y"], args["grad_output"]
    assert isinstance(result, tuple) and len(result) == 2, f"not a pair: {type(result)}"
    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    yt = torch.tensor(np.asarray(y, np.float64), requires_grad=True)
    d = torch_distances(xt, yt, str(args["metric"]))
    gx, gy = torch.autograd.grad(d, (xt, yt), torch.tensor(np.asarray(g, np.float64)))
    arr_type("grad_x", result[0], x.dtype, x.shape)
    arr_type("grad_y", result[1], y.dtype, y.shape)
    terms = cosine_terms(g, x, y) if args["metric"] == "cosine" else 0.0
    check_grads("grad_x", result[0], gx.numpy(), x.dtype, terms)
    check_grads("grad_y", result[1], gy.numpy(), y.dtype, terms)


@st.composite
def _xy(draw, draft, dt, b, d, zero_ok=True):
    q, n = draw(st.integers(1, 6) | st.integers(7, 70)), draw(st.integers(1, 6))
    scale = draw(st.sampled_from([1.0, 1e-2, 1e2]))
    seed = draw(seeds)
    yx = normal((b, n, d), seed + 1, dt, scale)
    xx = normal((b, q, d), seed, dt, scale)
    shape = draw(st.sampled_from(["plain", "zero row", "same rows"] if zero_ok else
                                 ["plain", "same rows"]))
    if shape == "zero row":
        xx = f"zero_row({xx}, 0)"
    elif shape == "same rows":  # distance exactly 0: no negative rounding allowed
        q = min(q, n)
        xx = f"np.array(({yx})[:, :{q}])"
    draft.arr("x", xx, (b, q, d), dt)
    draft.arr("y", yx, (b, n, d), dt)
    return q, n


@st.composite
def valid_pairwise(draw, backward=False):
    b, d, dt = draw(small), draw(dims), draw(st.sampled_from(FLOATS))
    draft = Draft()
    metric = draw(st.sampled_from(METRICS))
    # a zero vector sits on the kink of the clamped norm: no gradient to compare
    q, n = draw(_xy(draft, dt, b, d, zero_ok=not (backward and metric == "cosine")))
    if backward:
        draft.arr("grad_output", normal((b, q, n), draw(seeds), dt), (b, q, n), dt)
    draft.val("metric", repr(metric), value=metric)
    return draft


def _disagree(draft, a="x", b="y"):
    """``b`` with a feature or batch dimension unlike ``a``'s."""
    out = []
    shp, e = draft.facts[b]["shape"], draft.args[b]
    if shp[2] >= 2:
        out.append(Break(b, f"np.ascontiguousarray(({e})[:, :, :-1])", "feature dims differ",
                         (a, b)))
    out.append(Break(b, f"np.concatenate([{e}, {e}])", "batch dims differ", (a, b)))
    return out


def check_proto_distances(result, args, meta):
    s, lab, q = args["support"], np.asarray(args["labels"]), args["query"]
    ways = int(args["ways"])
    assert isinstance(result, tuple) and len(result) == 2, f"not a pair: {type(result)}"
    dist, protos = result
    b, _, d = s.shape
    arr_type("protos", protos, s.dtype, (b, ways, d))
    arr_type("distances", dist, s.dtype, (b, q.shape[1], ways))
    s64 = np.asarray(s, np.float64)
    want = np.stack([np.stack([s64[t][lab[t] == k].mean(0) for k in range(ways)])
                     for t in range(b)])
    eps = 2e-6 if s.dtype == np.float32 else 1e-12
    close("protos", protos, want, eps, eps * (1 + np.abs(s64).max(initial=0)))
    check_distance_values("distances", dist, q, want.astype(s.dtype), str(args["metric"]))


def check_proto_backward(result, args, meta):
    s, lab, q, g = args["support"], np.asarray(args["labels"]), args["query"], \
        args["grad_output"]
    ways = int(args["ways"])
    assert isinstance(result, tuple) and len(result) == 2, f"not a pair: {type(result)}"
    st_ = torch.tensor(np.asarray(s, np.float64), requires_grad=True)
    qt = torch.tensor(np.asarray(q, np.float64), requires_grad=True)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(lab), ways).double()
    protos = onehot.transpose(1, 2) @ st_ / onehot.sum(1)[..., None]
    d = torch_distances(qt, protos, str(args["metric"]))
    gs, gq = torch.autograd.grad(d, (st_, qt), torch.tensor(np.asarray(g, np.float64)))
    arr_type("grad_support", result[0], s.dtype, s.shape)
    arr_type("grad_query", result[1], q.dtype, q.shape)
    terms = cosine_terms(g, q, protos.detach().numpy()) * s.shape[1] \
        if args["metric"] == "cosine" else 0.0
    check_grads("grad_support", result[0], gs.numpy(), s.dtype, terms)
    check_grads("grad_query", result[1], gq.numpy(), q.dtype, terms)


@st.composite
def valid_proto(draw, backward=False):
    b, ways, d = draw(small), draw(small), draw(dims)
    dt = draw(st.sampled_from(FLOATS))
    labels = draw(class_labels(b, ways))
    s = len(labels[0])
    draft = Draft()
    seed = draw(seeds)
    support = normal((b, s, d), seed, dt)
    draft.arr("support", support, (b, s, d), dt)
    draft.arr("labels", ints(labels), (b, s), "int64")
    draft.facts["labels"]["values"] = labels
    nq = draw(st.integers(1, 8))
    draft.arr("query", normal((b, nq, d), seed + 1, dt), (b, nq, d), dt)
    if backward:
        # the forward's prototypes, from the clean values whatever is broken later
        draft.arr("protos", f"class_means({support}, {ints(labels)}, {ways})", (b, ways, d),
                  dt)
        draft.arr("grad_output", normal((b, nq, ways), seed + 2, dt), (b, nq, ways), dt)
    draft.val("ways", num(ways), value=ways)
    metric = draw(st.sampled_from(METRICS))
    draft.val("metric", repr(metric), value=metric)
    return draft


def _proto_breaks(draft):
    out = label_breaks(draft, data="support") + _disagree(draft, "support", "query")
    if "protos" in draft.args:  # the backward's protos and grad_output are sized by ways
        out = [replace(b, names=(*b.names, "protos", "grad_output")) if b.arg == "ways" else b
               for b in out]
    return out


def _feature(related, empty=("broken", "tolerated", "broken"), linked=()):
    return Arr(FLOATS, (3,), related=related, empty=empty, linked=linked)


TARGETS = [
    Target(
        name="core.pairwise_distances",
        call="_core.pairwise_distances(x, y, metric)",
        params={"x": _feature(("y",), linked=("y",)), "y": _feature(("x",), linked=("x",)),
                "metric": Choice(METRICS)},
        valid=valid_pairwise(),
        check=check_pairwise,
        relational=_disagree,
    ),
    Target(
        name="core.pairwise_distances_backward",
        call="_core.pairwise_distances_backward(x, y, grad_output, metric)",
        params={"x": _feature(("y", "grad_output"), linked=("y", "grad_output")),
                "y": _feature(("x", "grad_output"), linked=("x", "grad_output")),
                "grad_output": _feature(("x", "y"), ("broken",) * 3, ("x", "y")),
                "metric": Choice(METRICS)},
        valid=valid_pairwise(backward=True),
        check=check_pairwise_backward,
        relational=_disagree,
    ),
    Target(
        name="core.proto_distances",
        call="_core.proto_distances(support, labels, query, ways, metric)",
        params={"support": _feature(("labels", "query"), ("broken",) * 3, ("query",)),
                "labels": Arr(("int64",), (2,), related=("support",), empty="broken"),
                "query": _feature(("support",), linked=("support",)),
                "ways": Int(1, related=("labels",)),
                "metric": Choice(METRICS)},
        valid=valid_proto(),
        check=check_proto_distances,
        relational=_proto_breaks,
    ),
    Target(
        name="core.proto_distances_backward",
        call=("_core.proto_distances_backward(support, labels, query, protos, grad_output, "
              "ways, metric)"),
        params={"support": _feature(("labels", "query", "protos"), ("broken",) * 3,
                                    ("query", "protos", "grad_output")),
                "labels": Arr(("int64",), (2,), related=("support",), empty="broken"),
                "query": _feature(("support", "grad_output"),
                                  linked=("support", "protos", "grad_output")),
                "protos": _feature(("support", "ways"), ("broken",) * 3,
                                   ("support", "query", "grad_output")),
                "grad_output": _feature(("query", "ways"), ("broken",) * 3,
                                        ("support", "query", "protos")),
                "ways": Int(1, related=("labels", "protos", "grad_output")),
                "metric": Choice(METRICS)},
        valid=valid_proto(backward=True),
        check=check_proto_backward,
        relational=_proto_breaks,
    ),
]
