"""Targets: ``mr.ops`` (prototypes, pairwise_distances, prototype_distances and their torch
twins), on single (2-D) and batched (3-D) CPU tensors, values against the NumPy references
of the kernels and, for inputs that require grad, gradients against float64 autograd."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Float, Int
from ..values import normal, num
from ._common import class_labels, close, dims, seeds, small
from .core_distances import cosine_terms, ref_distances, torch_distances
from .core_prototypes import check_geometric_median, robust_reference

FLOATS = ("float32", "float64")
LABEL_DTYPES = ("int64", "int32", "int16", "uint8")
METHODS = tuple(mr.ops.METHODS)
METRICS = tuple(mr.ops.METRICS)


def _np3(t):
    a = t.detach().numpy().astype(np.float64)
    return a[None] if a.ndim == 2 else a


def _tensor_out(what, result, like, shape):
    assert isinstance(result, torch.Tensor), f"{what}: a {type(result).__name__}"
    assert result.dtype == like.dtype, f"{what}: dtype {result.dtype}, expected {like.dtype}"
    assert tuple(result.shape) == tuple(shape), f"{what}: shape {tuple(result.shape)}, " \
        f"expected {tuple(shape)}"


def _grad_check(result, inputs, reference, terms=0.0):
    """For inputs that require grad: their gradients of ``sum(result * w)`` equal those of
    ``reference(*float64 copies)`` (``terms``: the size of cancelling terms, see
    :func:`cosine_terms`)."""
    leaves = [t for t in inputs if t.requires_grad]
    if not leaves:
        return
    w = torch.linspace(-1, 1, result.numel(), dtype=torch.float64).reshape(result.shape)
    got = torch.autograd.grad((result * w.to(result.dtype)).sum(), leaves)
    copies = [t.detach().double().requires_grad_(t.requires_grad) for t in inputs]
    ref = reference(*copies)
    want = torch.autograd.grad((ref * w).sum(), [c for c in copies if c.requires_grad])
    eps = 1e-4 if result.dtype == torch.float32 else 1e-9
    for i, (g, r) in enumerate(zip(got, want)):
        scale = float(r.abs().max()) if r.numel() else 0.0
        close(f"gradient of input {i}", g.numpy(), r.numpy(), eps, eps * (1 + scale + terms))


def check_prototypes(result, args, meta):
    emb, labels = args["emb"], args["labels"]
    ways, method = int(args["ways"]), str(args["method"])
    x, lab = _np3(emb), labels.numpy().astype(np.int64).reshape(_np3(emb).shape[:2])
    single = emb.dim() == 2
    _tensor_out("prototypes", result, emb, (ways, emb.shape[-1]) if single else
                (emb.shape[0], ways, emb.shape[-1]))
    got = result.detach().numpy().astype(np.float64).reshape(x.shape[0], ways, -1)
    eps = 2e-6 if emb.dtype == torch.float32 else 1e-12
    if method == "filtered_mean":
        if emb.shape[-1] == 1 and args["metric"] == "cosine":
            return  # 1-D cosine distances are 0 or 2: ties everywhere, either choice is right
        if float(args["tol"]) > 1e-6 or int(args["max_iter"]) < 100:
            return  # loosely solved medians: each path may keep a different item
        twin = mr.ops.prototypes_torch(emb.detach(), labels, ways, method, trim=args["trim"],
                                       tol=args["tol"], max_iter=args["max_iter"],
                                       metric=args["metric"], rounds=args["rounds"])
        close("filtered_mean against prototypes_torch", result.detach().numpy(),
              twin.numpy(), 1e-4, 1e-4 * (1 + float(twin.abs().max())))
        return
    for t in range(x.shape[0]):
        for k in range(ways):
            rows = x[t][lab[t] == k]
            scale = 1 + np.abs(rows).max(initial=0)
            what = f"prototypes[{t}, {k}] ({method})"
            if method == "geometric_median":
                check_geometric_median(what, got[t, k], rows, float(args["tol"]),
                                       int(args["max_iter"]), scale)
            else:
                close(what, got[t, k], robust_reference(rows, method, float(args["trim"])),
                      eps, eps * scale)
    if method in ("mean", "median", "trimmed_mean") and not meta.get("ties"):
        _grad_check(result, [emb], lambda e: torch_prototypes(e, lab, ways, method,
                                                              float(args["trim"]), single))


def torch_prototypes(e, lab, ways, method, trim, single):
    """Mean, median or trimmed mean prototypes with torch autograd (reference)."""
    e3 = e[None] if single else e
    out = []
    for t in range(e3.shape[0]):
        rows = []
        for k in range(ways):
            x = e3[t][torch.from_numpy(lab[t] == k)]
            n = x.shape[0]
            if method == "mean":
                rows.append(x.mean(0))
                continue
            srt = torch.sort(x, 0).values
            if method == "median":
                rows.append(0.5 * (srt[(n - 1) // 2] + srt[n // 2]))
            else:
                cut = int(np.floor(trim * n))
                rows.append(srt[cut:n - cut].mean(0))
        out.append(torch.stack(rows))
    res = torch.stack(out)
    return res[0] if single else res


@st.composite
def valid_prototypes(draw, torch_twin=False):
    b, ways = draw(small), draw(small)
    labels = draw(class_labels(b, ways))
    s, d, dt = len(labels[0]), draw(dims), draw(st.sampled_from(FLOATS))
    single = draw(st.booleans()) and b == 1
    method = draw(st.sampled_from(METHODS))
    draft = Draft()
    emb = normal((b, s, d), draw(seeds), dt)
    if method in ("median", "geometric_median") and draw(st.booleans()):
        emb = f"np.round({emb})"  # ties: which tied item gets the gradient is arbitrary
        draft.meta["ties"] = True
    shape = (s, d) if single else (b, s, d)
    draft.arr("emb", f"torch.from_numpy({emb})" + ("[0]" if single else ""), shape, dt)
    ldt = draw(st.sampled_from(LABEL_DTYPES))
    lab = labels[0] if single else labels
    draft.arr("labels", f"torch.tensor({lab!r}, dtype=torch.{ldt})", (s,) if single else
              (b, s), ldt)
    draft.facts["labels"]["values"] = labels
    draft.val("ways", num(ways), value=ways)
    draft.val("method", repr(method), value=method)
    for name, v in (("trim", draw(st.sampled_from([0.0, 0.2, 0.49]))),
                    ("tol", draw(st.sampled_from([1e-6, 1e-3]))),
                    ("max_iter", draw(st.sampled_from([100, 7]))),
                    ("metric", draw(st.sampled_from(METRICS))),
                    ("rounds", draw(st.integers(1, 3)))):
        draft.val(name, num(v) if not isinstance(v, str) else repr(v), value=v)
    return draft


def _label_breaks(draft, data="emb"):
    lab = draft.args["labels"]
    w = draft.facts["ways"]["value"]
    values = ((w, "== ways"),) if draft.facts["labels"]["dtype"] == "uint8" else \
        ((w, "== ways"), (-1, "negative"))
    out = [Break("labels", f"with_value({lab}, {v}, 0)", f"label {how}", ("labels",))
           for v, how in values]
    out.append(Break("ways", num(w + 1), "ways beyond the labels' classes", ("ways", "labels")))
    out.append(Break("labels", f"({lab})[..., :-1]", "shorter than the data",
                     ("labels", data)))
    return out


def _params(emb="emb"):
    return {emb: Arr(FLOATS, (2, 3), lib="torch", related=("labels",),
                     empty=("broken", "broken", "tolerated")),
            "labels": Arr(LABEL_DTYPES, (1, 2), lib="torch", related=(emb,), empty="broken"),
            "ways": Int(1, related=("labels",))}


def _prototype_params():
    p = _params()
    p.update({"method": Choice(METHODS), "trim": Float(0.0, 0.5, hi_open=True),
              "tol": Float(0.0, lo_open=True), "max_iter": Int(1, huge="skip"),
              "metric": Choice(METRICS), "rounds": Int(1, huge="skip")})
    return p


def check_pairwise(result, args, meta):
    x, y, metric = args["x"], args["y"], str(args["metric"])
    single = x.dim() == 2
    shape = (x.shape[0], y.shape[0]) if single else (x.shape[0], x.shape[1], y.shape[1])
    _tensor_out("distances", result, x, shape)
    want = ref_distances(_np3(x), _np3(y), metric)
    got = result.detach().numpy().reshape(want.shape)
    eps = 1e-5 if x.dtype == torch.float32 else 1e-11
    atol = eps * (1 + (_np3(x) ** 2).sum(-1)[:, :, None] + (_np3(y) ** 2).sum(-1)[:, None])
    close("distances", got, want, eps, atol)

    def ref(a, b):
        a3, b3 = (a[None], b[None]) if single else (a, b)
        d = torch_distances(a3, b3, metric)
        return d[0] if single else d

    if metric == "sqeuclidean" or bool((x.norm(dim=-1) > 1e-6).all()):
        terms = cosine_terms(np.ones(1), _np3(x), _np3(y)) if metric == "cosine" else 0.0
        _grad_check(result, [x, y], ref, terms)


@st.composite
def valid_pairwise(draw):
    b, d, dt = draw(small), draw(dims), draw(st.sampled_from(FLOATS))
    q, n = draw(st.integers(1, 6) | st.integers(7, 60)), draw(st.integers(1, 6))
    single = draw(st.booleans()) and b == 1
    seed = draw(seeds)
    draft = Draft()
    for name, rows, sd in (("x", q, seed), ("y", n, seed + 1)):
        shp = (rows, d) if single else (b, rows, d)
        draft.arr(name, f"torch.from_numpy({normal(shp, sd, dt)})", shp, dt)
    metric = draw(st.sampled_from(METRICS))
    draft.val("metric", repr(metric), value=metric)
    return draft


def _xy_breaks(draft):
    y, shp = draft.args["y"], draft.facts["y"]["shape"]
    out = [Break("y", f"torch.cat([{y}, {y}], dim=-1)", "feature dims differ", ("x", "y"))]
    if len(shp) == 3:
        out.append(Break("y", f"torch.cat([{y}, {y}])", "batch dims differ", ("x", "y")))
    return out


def check_proto_distances(result, args, meta):
    s, labels, q = args["support"], args["labels"], args["query"]
    ways, metric = int(args["ways"]), str(args["metric"])
    single = s.dim() == 2
    s3, q3 = _np3(s), _np3(q)
    lab = labels.numpy().astype(np.int64).reshape(s3.shape[:2])
    protos = np.stack([np.stack([s3[t][lab[t] == k].mean(0) for k in range(ways)])
                       for t in range(s3.shape[0])])
    _tensor_out("distances", result, s, (q.shape[0], ways) if single else
                (q.shape[0], q.shape[1], ways))
    want = ref_distances(q3, protos, metric)
    eps = 1e-5 if s.dtype == torch.float32 else 1e-11
    atol = eps * (1 + (q3 ** 2).sum(-1)[:, :, None] + (protos ** 2).sum(-1)[:, None])
    close("distances", result.detach().numpy().reshape(want.shape), want, eps, atol)

    def ref(sup, qu):
        s_, q_ = (sup[None], qu[None]) if single else (sup, qu)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(lab), ways).to(s_.dtype)
        p = onehot.transpose(1, 2) @ s_ / onehot.sum(1)[..., None]
        d = torch_distances(q_, p, metric)
        return d[0] if single else d

    _grad_check(result, [s, q], ref)


@st.composite
def valid_proto_distances(draw):
    draft = draw(valid_prototypes())
    emb = draft.args.pop("emb")
    f = draft.facts.pop("emb")
    for k in ("method", "trim", "tol", "max_iter", "rounds"):
        draft.args.pop(k)
    metric = draft.args.pop("metric")
    draft.arr("support", emb, f["shape"], f["dtype"])
    labels, ways = draft.args.pop("labels"), draft.args.pop("ways")
    draft.args["labels"] = labels
    shp = [*f["shape"][:-2], draw(st.integers(1, 8)), f["shape"][-1]]
    q = f"torch.from_numpy({normal(shp, draw(seeds), f['dtype'])})"
    draft.arr("query", q, shp, f["dtype"])
    draft.args["ways"] = ways
    draft.args["metric"] = metric
    return draft


def _xy_params() -> dict:
    """Two related float tensors and a metric (the pairwise distance functions)."""
    return {"x": Arr(FLOATS, (2, 3), lib="torch", related=("y",), linked=("y",), empty="broken"),
            "y": Arr(FLOATS, (2, 3), lib="torch", related=("x",), linked=("x",), empty="broken"),
            "metric": Choice(METRICS)}


def _pd_params():
    p = _params("support")
    p["query"] = Arr(FLOATS, (2, 3), lib="torch", related=("support",), empty="broken")
    p["ways"] = Int(1, related=("labels",))
    p["metric"] = Choice(METRICS)
    return p


TARGETS = [
    Target(name="ops.prototypes",
           call=("mr.ops.prototypes(emb, labels, ways, method, trim=trim, tol=tol, "
                 "max_iter=max_iter, metric=metric, rounds=rounds)"),
           params=_prototype_params(), valid=valid_prototypes(), check=check_prototypes,
           relational=_label_breaks),
    Target(name="ops.prototypes_torch",
           call=("mr.ops.prototypes_torch(emb, labels, ways, method, trim=trim, tol=tol, "
                 "max_iter=max_iter, metric=metric, rounds=rounds)"),
           params=_prototype_params(), valid=valid_prototypes(), check=check_prototypes,
           relational=_label_breaks),
    Target(name="ops.pairwise_distances", call="mr.ops.pairwise_distances(x, y, metric)",
           params=_xy_params(),
           valid=valid_pairwise(), check=check_pairwise, relational=_xy_breaks),
    Target(name="ops.pairwise_distances_torch",
           call="mr.ops.pairwise_distances_torch(x, y, metric)",
           params=_xy_params(),
           valid=valid_pairwise(), check=check_pairwise, relational=_xy_breaks),
    Target(name="ops.prototype_distances",
           call="mr.ops.prototype_distances(support, labels, query, ways, metric)",
           params=_pd_params(), valid=valid_proto_distances(), check=check_proto_distances,
           relational=lambda d: _label_breaks(d, "support")),
]
