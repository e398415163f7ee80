"""Targets: the fused first Conv-4 blocks of ``_core`` (pooling and strided, forward and
backward), against the same blocks in torch (conv, batch-statistics BatchNorm, max-pool or
stride, ReLU) and torch autograd."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from ..case import Break, Draft, Target
from ..spec import Arr, Bool, Float
from ..values import normal, num, shape, zeros
from ._common import close, seeds

F32 = ("float32",)


def block_reference(x, w, b, g, be, eps, strided):
    """The block in float64 torch: ``(output, conv mean, conv biased var)``; the pooling
    block's output is channels-last."""
    t = [torch.tensor(np.asarray(a, np.float64)) for a in (x, w, b, g, be)]
    y = F.conv2d(t[0], t[1], t[2], stride=2 if strided else 1, padding=1)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    z = (y - mean[:, None, None]) / torch.sqrt(var + eps)[:, None, None]
    z = z * t[3][:, None, None] + t[4][:, None, None]
    if strided:
        return torch.relu(z), mean, var
    return torch.relu(F.max_pool2d(z, 2)).permute(0, 2, 3, 1), mean, var


def check_forward(result, args, meta):
    strided = bool(meta["strided"])
    assert isinstance(result, tuple) and len(result) == 2, f"not (mean, var): {result!r}"
    out, mean, var = block_reference(args["x"], args["weight"], args["bias"], args["gamma"],
                                     args["beta"], float(args["eps"]), strided)
    c = out.shape[-1 if not strided else 1]
    for what, got, want in (("mean", result[0], mean), ("var", result[1], var)):
        assert isinstance(got, list) and len(got) == c, f"{what}: {got!r}, expected {c} floats"
        close(what, got, want.numpy(), 1e-4, 1e-4 * (1 + float(want.abs().max())))
    close("out", args["out"], out.numpy(), 1e-4, 1e-4 * (1 + float(out.abs().max())))


def check_pool_backward(result, args, meta):
    """Gradients of ``sum(dout * block(x))`` (float32 torch autograd, so max-pool picks the
    same maxima as float32 arithmetic)."""
    assert isinstance(result, tuple) and len(result) == 4, f"not 4 gradients: {result!r}"
    ts = [torch.tensor(np.asarray(args[k])) for k in ("weight", "bias", "gamma", "beta")]
    for t in ts:
        t.requires_grad_(True)
    x = torch.tensor(np.asarray(args["x"]))
    y = F.conv2d(x, ts[0], ts[1], padding=1)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    z = (y - mean[:, None, None]) / torch.sqrt(var + float(args["eps"]))[:, None, None]
    z = z * ts[2][:, None, None] + ts[3][:, None, None]
    out = torch.relu(F.max_pool2d(z, 2)).permute(0, 2, 3, 1)
    grads = torch.autograd.grad(out, ts, torch.tensor(np.asarray(args["dout"])))
    for what, got, want in zip(("weight", "bias", "gamma", "beta"), result, grads):
        want = want.double().numpy().reshape(-1)
        assert isinstance(got, list) and len(got) == want.size, \
            f"grad {what}: {len(got) if isinstance(got, list) else got!r} values, " \
            f"expected {want.size}"
        close(f"grad {what}", got, want, 1e-3, 1e-3 * (1 + np.abs(want).max(initial=0)))


def check_strided_backward(result, args, meta):
    """Gradients through the strided block with the ReLU mask of the given ``out``."""
    assert isinstance(result, tuple) and len(result) == 3, f"not 3 gradients: {result!r}"
    w = torch.tensor(np.asarray(args["weight"], np.float64), requires_grad=True)
    g = torch.tensor(np.asarray(args["gamma"], np.float64), requires_grad=True)
    be = torch.zeros_like(g, requires_grad=True)
    y = F.conv2d(torch.tensor(np.asarray(args["x"], np.float64)), w, stride=2, padding=1)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    z = (y - mean[:, None, None]) / torch.sqrt(var + float(args["eps"]))[:, None, None]
    z = z * g[:, None, None] + be[:, None, None]
    mask = torch.tensor(np.asarray(args["out"]) > 0)
    dz = torch.tensor(np.asarray(args["dout"], np.float64)) * mask
    grads = torch.autograd.grad(z, (w, g, be), dz)
    for what, got, want in zip(("weight", "gamma", "beta"), result, grads):
        want = want.numpy().reshape(-1)
        assert isinstance(got, list) and len(got) == want.size, \
            f"grad {what}: {len(got) if isinstance(got, list) else got!r}, expected " \
            f"{want.size} values"
        close(f"grad {what}", got, want, 1e-3, 1e-3 * (1 + np.abs(want).max(initial=0)))


@st.composite
def _block(draw, strided, backward):
    n, cin, c = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 8))
    # at least two values per channel after the convolution: batch statistics exist
    lo = 3 if strided else 2
    h, w = draw(st.integers(lo, 12)), draw(st.integers(lo, 12))
    seed = draw(seeds)
    draft = Draft(meta={"strided": strided})
    draft.setup += [f"_x = {normal((n, cin, h, w), seed)}",
                    f"_w = {normal((c, cin, 3, 3), seed + 1, scale=0.5)}",
                    f"_b = {normal((c,), seed + 2)}",
                    f"_g = (1 + {normal((c,), seed + 3, scale=0.3)}).astype('float32')",
                    f"_be = {normal((c,), seed + 4, scale=0.3)}"]
    draft.arr("x", "_x", (n, cin, h, w), "float32")
    draft.arr("weight", "_w", (c, cin, 3, 3), "float32")
    if not (strided and backward):
        draft.arr("bias", "_b", (c,), "float32")
    draft.arr("gamma", "_g", (c,), "float32")
    if not (strided and backward):
        draft.arr("beta", "_be", (c,), "float32")
    eps = draw(st.sampled_from([1e-5, 1e-3, 1e-8, 0.1]))  # the kernels need eps > 0
    oshape = (n, c, (h + 1) // 2, (w + 1) // 2) if strided else (n, h // 2, w // 2, c)
    return draft, eps, oshape, seed


@st.composite
def valid_forward(draw, strided):
    draft, eps, oshape, _ = draw(_block(strided, False))
    draft.val("eps", num(eps), value=eps)
    draft.arr("out", zeros(oshape, "float32"), oshape, "float32")
    if strided:
        draft.val("parallel", repr(draw(st.booleans())))
    return draft


@st.composite
def valid_backward(draw, strided):
    draft, eps, oshape, seed = draw(_block(strided, True))
    conv = (f"F.conv2d(torch.from_numpy(_x), torch.from_numpy(_w), torch.from_numpy(_b), "
            f"stride={2 if strided else 1}, padding=1)")
    draft.setup += ["import torch.nn.functional as F", f"_y = {conv}",
                    "_var = _y.var((0, 2, 3), unbiased=False)"]
    if strided:
        draft.setup.append(
            f"_out = torch.relu((_y - _y.mean((0, 2, 3))[:, None, None]) / torch.sqrt(_var + "
            f"{num(eps)})[:, None, None] * torch.from_numpy(_g)[:, None, None] + "
            f"torch.from_numpy(_be)[:, None, None]).numpy()")
        draft.arr("var", "_var.numpy()", oshape[1:2], "float32")
        draft.val("eps", num(eps), value=eps)
        draft.arr("out", "_out", oshape, "float32")
        draft.arr("dout", normal(oshape, seed + 5), oshape, "float32")
        draft.val("parallel", repr(draw(st.booleans())))
    else:
        draft.arr("mean", "_y.mean((0, 2, 3)).numpy()", oshape[3:], "float32")
        draft.arr("var", "_var.numpy()", oshape[3:], "float32")
        draft.val("eps", num(eps), value=eps)
        draft.arr("dout", normal(oshape, seed + 5), oshape, "float32")
    return draft


def _shape_breaks(draft):
    """Arrays whose shapes disagree with the others', and an output over the input."""
    out = []
    xs, o = draft.facts["x"]["shape"], draft.facts.get("out")
    if o and draft.args["out"].startswith("np.zeros") and np.prod(xs) >= np.prod(o["shape"]):
        n = int(np.prod(o["shape"]))
        out.append(Break("out", f"_x.reshape(-1)[:{n}].reshape({shape(o['shape'])})",
                         "shares memory with x", ("out", "x")))
    for name, f in draft.facts.items():
        shp = f.get("shape")
        if not shp or name == "x":
            continue
        e = draft.args[name]
        if name == "weight":
            c, cin = shp[0], shp[1]
            out.append(Break(name, f"np.zeros(({c}, {cin}, 5, 5), np.float32)",
                             "5x5 kernel", (name,)))
            out.append(Break(name, f"np.zeros(({c}, {cin + 1}, 3, 3), np.float32)",
                             "in-channels unlike x", (name, "x")))
        else:
            bigger = list(shp)
            bigger[-1] += 1
            out.append(Break(name, f"np.zeros({shape(bigger)}, np.float32)",
                             "last axis one too long", (name, "weight", "x")))
            if len(shp) > 1:
                out.append(Break(name, f"np.ascontiguousarray(({e})[1:])" if shp[0] > 1 else
                                 f"np.concatenate([{e}, {e}])", "batch unlike x", (name, "x")))
    return out


def _vec(related=("weight",)):
    return Arr(F32, (1,), related=related, empty="broken")


def _params(strided, backward):
    p = {"x": Arr(F32, (4,), related=("weight", "out", "dout"), empty="broken"),
         "weight": Arr(F32, (4,), related=("x",), empty="broken")}
    if not (strided and backward):
        p["bias"] = _vec()
    p["gamma"] = _vec()
    if not (strided and backward):
        p["beta"] = _vec()
    if backward and not strided:
        p["mean"] = _vec()
    if backward:
        p["var"] = _vec()
    p["eps"] = Float(0.0)
    if not backward or strided:
        p["out"] = Arr(F32, (4,), role="in" if backward else "out", finite=backward,
                       related=("x", "weight"), empty="broken")
    if backward:
        p["dout"] = Arr(F32, (4,), related=("x", "weight", "out"), empty="broken")
    if strided:
        p["parallel"] = Bool()
    return p


def _target(name, strided, backward, call, check):
    return Target(name=name, call=call, params=_params(strided, backward),
                  valid=(valid_backward if backward else valid_forward)(strided),
                  check=check, relational=_shape_breaks,
                  outputs=() if backward else ("out",))


TARGETS = [
    _target("core.conv_block_forward", False, False,
            "_core.conv_block_forward(x, weight, bias, gamma, beta, eps, out)", check_forward),
    _target("core.conv_block_backward", False, True,
            "_core.conv_block_backward(x, weight, bias, gamma, beta, mean, var, eps, dout)",
            check_pool_backward),
    _target("core.strided_block_forward", True, False,
            "_core.strided_block_forward(x, weight, bias, gamma, beta, eps, out, parallel)",
            check_forward),
    _target("core.strided_block_backward", True, True,
            "_core.strided_block_backward(x, weight, gamma, var, eps, out, dout, parallel)",
            check_strided_backward),
]
