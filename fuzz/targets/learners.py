"""Targets: learners on tiny models (``predict``, ``evaluate_batch`` of ProtoNet and MAML)
and the attacks (``fgsm``, ``pgd``, ``adversarial_queries``). ProtoNet results are checked
against prototypes and distances computed here with plain torch (FGSM against the sign of
the query gradient computed here); MAML results and the attacks' constraints (the ball,
the box, the other image set untouched, determinism) by their documented properties."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Arr, Bool, Choice, Float, Int, Obj
from ..values import num
from .robust import episode_batch

IMAGE_DTYPES = ("float32", "float64", "uint8")


def learner_setup(draw, draft, ways):
    """Setup of ``learner``: a ProtoNet, MAML or one of the other learners over a linear
    body of the 8x8 glyphs."""
    kind = draw(st.sampled_from(["protonet", "maml", *OTHER_LEARNERS]))
    d = draw(st.integers(2, 8))
    draft.setup += [f"torch.manual_seed({draw(st.integers(0, 99))})",
                    f"net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, {d}))",
                    f"net.out_features = {d}"]
    if kind == "protonet":
        metric = draw(st.sampled_from(["sqeuclidean", "cosine"]))
        scale = draw(st.sampled_from([1.0, 10.0]))
        draft.setup.append(f"learner = mr.learners.ProtoNet(net, metric={metric!r}, "
                           f"scale={scale})")
        facts = {"kind": kind, "metric": metric, "scale": scale}
    elif kind == "maml":
        steps = draw(st.integers(0, 2))
        draft.setup.append(f"learner = mr.learners.MAML(net, inner_lr=0.1, inner_steps={steps}, "
                           f"ways={ways}, path='loop')")
        facts = {"kind": kind}
    else:
        draft.setup.append(f"learner = {OTHER_LEARNERS[kind](draw, ways)}")
        facts = {"kind": kind}
    draft.setup.append("learner.eval()")
    return facts


# the other learners: the constructor call of each, drawn
OTHER_LEARNERS = {
    "matching": lambda draw, ways: (f"mr.learners.MatchingNet(net, fce={draw(st.booleans())}, "
                                    f"scale={draw(st.sampled_from([1.0, 10.0]))})"),
    "relation": lambda draw, ways: (f"mr.learners.RelationNet(net, "
                                    f"hidden={draw(st.integers(1, 8))})"),
    "r2d2": lambda draw, ways: (f"mr.learners.R2D2(net, "
                                f"lam={draw(st.sampled_from([0.1, 50.0]))})"),
    "metaoptnet": lambda draw, ways: (f"mr.learners.MetaOptNet(net, "
                                      f"c={draw(st.sampled_from([0.1, 1.0]))}, "
                                      f"solver_steps={draw(st.integers(1, 20))})"),
    "protomaml": lambda draw, ways: (f"mr.learners.ProtoMAML(net, inner_lr=0.1, "
                                     f"inner_steps={draw(st.integers(0, 2))}, ways={ways}, "
                                     "path='loop')"),
    "reptile": lambda draw, ways: (f"mr.learners.Reptile(net, inner_lr=0.1, "
                                   f"test_inner_steps={draw(st.integers(0, 2))}, ways={ways}, "
                                   "path='loop')"),
    "simpleshot": lambda draw, ways: (
        f"mr.learners.SimpleShot(net, "
        f"centering={draw(st.sampled_from(['base', 'support', 'none']))!r})"),
    "baseline_pp": lambda draw, ways: (f"mr.learners.BaselinePP(net, "
                                       f"finetune_epochs={draw(st.integers(0, 3))}, "
                                       f"batch_size={draw(st.sampled_from([None, 1, 4]))})"),
    "meta_baseline": lambda draw, ways: (
        f"mr.learners.MetaBaseline(net, temperature={draw(st.sampled_from([1.0, 10.0]))})"),
    "tim": lambda draw, ways: (f"mr.learners.TIM(net, iterations={draw(st.integers(0, 5))}, "
                               f"lr={draw(st.sampled_from([1e-4, 0.1]))})"),
}


def as_float(x):
    return x.to(torch.float32) / 255 if x.dtype == torch.uint8 else x


def protonet_logits(learner, sx, sy, qx, ways, metric, scale):
    """ProtoNet's logits ``(Q, ways)`` for one task, computed here."""
    net = learner.backbone
    es, eq = net(as_float(sx).float()), net(as_float(qx).float())
    onehot = F.one_hot(sy.long(), ways).float()
    protos = onehot.T @ es / onehot.sum(0)[:, None]
    if metric == "sqeuclidean":
        d = ((eq[:, None] - protos[None]) ** 2).sum(-1)
    else:
        d = 1 - F.normalize(eq, dim=-1, eps=1e-8) @ F.normalize(protos, dim=-1, eps=1e-8).T
    return -scale * d


# ---------------------------------------------------------------- predict, evaluate_batch


@st.composite
def valid_predict(draw):
    draft = Draft()
    facts = draw(episode_batch(draft, min_ways=1))
    facts.update(learner_setup(draw, draft, facts["ways"]))
    draft.arr("support_x", "clean.support_x[0]", [facts["ways"] * facts["shots"], 1, 8, 8],
              facts["dtype"])
    ldt = draw(st.sampled_from(["int64", "int32"]))
    draft.arr("support_y", f"clean.support_y[0].to(torch.{ldt})",
              [facts["ways"] * facts["shots"]], ldt)
    draft.arr("query_x", "clean.query_x[0]", [facts["ways"] * facts["queries"], 1, 8, 8],
              facts["dtype"])
    draft.meta = {"facts": facts, "env": ["learner"]}
    return draft


def check_predict(result, args, meta):
    f, learner = meta["facts"], args["learner"]
    sx, sy, qx = args["support_x"], args["support_y"], args["query_x"]
    ways = int(sy.max()) + 1
    assert isinstance(result, torch.Tensor) and tuple(result.shape) == (qx.shape[0], ways), \
        f"{type(result).__name__} {getattr(result, 'shape', '')}"
    assert bool(torch.isfinite(result).all()), "non-finite logits"
    assert not learner.training, "predict left the learner in training mode"
    again = learner.predict(sx, sy, qx)
    assert torch.equal(result, again), "two predictions differ"
    if f["kind"] == "protonet":
        with torch.no_grad():
            want = protonet_logits(learner, sx, sy, qx, ways, f["metric"], f["scale"])
        scale = 1 + float(want.abs().max())
        assert torch.allclose(result.double(), want.double(), rtol=1e-4, atol=1e-4 * scale), \
            f"logits differ by {float((result - want).abs().max()):.3g}"


def predict_breaks(draft):
    sx, sy, qx = (draft.args[k] for k in ("support_x", "support_y", "query_x"))
    ways = draft.meta["facts"]["ways"]
    out = [Break("support_y", f"torch.where({sy} == 0, {ways}, {sy})", "class 0 missing",
                 ("support_y",)),
           Break("query_x", f"({qx})[:, :, :4]", "items unlike the support's",
                 ("query_x", "support_x")),
           Break("support_y", f"({sy})[:-1]", "one label short", ("support_y", "support_x")),
           Break("support_x", f"as_float64({sx})", "float64 images",
                 ("support_x", "x"), tolerated=True)]
    return out


@st.composite
def valid_evaluate(draw):
    draft = Draft()
    facts = draw(episode_batch(draft, min_ways=1))
    facts.update(learner_setup(draw, draft, facts["ways"]))
    draft.val("batch", "batch")
    draft.val("ways", num(facts["ways"]), value=facts["ways"])
    draft.meta = {"facts": facts, "env": ["learner", "clean"]}
    return draft


def check_evaluate(result, args, meta):
    f, learner, b = meta["facts"], args["learner"], args["batch"]
    ways = int(args["ways"])
    assert isinstance(result, torch.Tensor) and tuple(result.shape) == (f["count"],), result
    assert bool(((result >= 0) & (result <= 1)).all()), f"accuracies {result}"
    if f["kind"] == "protonet":
        with torch.no_grad():
            want = torch.stack([
                (protonet_logits(learner, b.support_x[t], b.support_y[t], b.query_x[t], ways,
                                 f["metric"], f["scale"]).argmax(-1) == b.query_y[t]).float()
                .mean() for t in range(f["count"])])
        assert torch.allclose(result.float(), want), f"accuracies {result}, expected {want}"


def evaluate_breaks(draft):
    return [Break("batch", "mr.Episode(batch.support_x, batch.support_y + 100, batch.query_x, "
                  "batch.query_y, batch.classes)", "labels out of range",
                  ("batch", "support_y", "batch.support_y")),
            Break("batch", "mr.Episode(batch.support_x[..., :4], batch.support_y, "
                  "batch.query_x, batch.query_y, batch.classes)",
                  "support images unlike the queries", ("batch", "support_x", "batch.support_x")),
            Break("batch", "(batch.support_x, batch.support_y)", "a tuple", ("batch",))]


# ---------------------------------------------------------------- attacks


def attack_draft(draw, kind):
    draft = Draft()
    facts = draw(episode_batch(draft, min_ways=1))
    facts.update(learner_setup(draw, draft, facts["ways"]))
    if kind == "adversarial_queries" and draw(st.booleans()):
        draft.setup.append("learner.train()")
    draft.val("learner", "learner")
    draft.val("batch", "batch")
    draft.val("ways", num(facts["ways"]), value=facts["ways"])
    eps = draw(st.sampled_from([0.0, 2 / 255, 0.1, 0.5]))
    draft.val("eps", num(eps), value=eps)
    if kind != "fgsm":
        draft.val("steps", num(draw(st.integers(0, 3))))
        draft.val("step_size", num(draw(st.sampled_from([2 / 255, 0.05, 0.0]))))
    draft.val("norm", repr(draw(st.sampled_from(["linf", "l2"]))))
    if kind != "adversarial_queries":
        draft.val("target", repr(draw(st.sampled_from(["query", "support"]))))
    if kind != "fgsm":
        draft.val("random_start", repr(draw(st.booleans())))
        draft.val("seed", num(draw(st.integers(0, 2**64 - 1) | st.integers(0, 9))))
    draft.meta = {"facts": facts, "kind": kind, "env": ["learner", "clean"]}
    return draft


def check_attack(result, args, meta):
    clean, eps = args["clean"], float(args["eps"])
    norm, target = args["norm"], args.get("target", "query")
    assert isinstance(result, mr.Episode), type(result)
    for name in ("support_y", "query_y", "classes"):
        assert torch.equal(getattr(result, name), getattr(clean, name)), f"{name} changed"
    field, other = ("query_x", "support_x") if target == "query" else ("support_x", "query_x")
    assert torch.equal(getattr(result, other), as_float(getattr(clean, other))), \
        f"{other} changed"
    x = as_float(getattr(clean, field)).double()
    adv = getattr(result, field)
    assert adv.dtype == x.float().dtype, adv.dtype
    adv = adv.double()
    assert bool(((adv >= 0) & (adv <= 1)).all()), "outside the [0, 1] box"
    delta = (adv - x).flatten(2)
    size = delta.abs().amax(-1) if norm == "linf" else torch.linalg.vector_norm(delta, dim=-1)
    assert bool((size <= eps).all()), f"outside the {norm} ball: {float(size.max())} > {eps}"
    call = {"fgsm": mr.robust.fgsm, "pgd": mr.robust.pgd,
            "adversarial_queries": mr.robust.adversarial_queries}[meta["kind"]]
    kw = {k: args[k] for k in ("eps", "steps", "step_size", "norm", "target", "random_start",
                               "seed") if k in args}
    again = call(args["learner"], clean, args["ways"], **kw)
    assert torch.equal(getattr(again, field), getattr(result, field)), "two runs differ"
    if meta["kind"] == "fgsm" and meta["facts"]["kind"] == "protonet" and target == "query" \
            and norm == "linf" and eps > 0:
        check_fgsm_sign(result, args, meta, x, eps)


def check_fgsm_sign(result, args, meta, x, eps):
    """L-inf FGSM on the queries moves each pixel by eps along the sign of the gradient
    computed here (pixels with a clear gradient only)."""
    f, clean, learner = meta["facts"], args["clean"], args["learner"]
    q = as_float(clean.query_x).detach().clone().requires_grad_(True)
    logits = torch.cat([protonet_logits(learner, clean.support_x[t], clean.support_y[t], q[t],
                                        f["ways"], f["metric"], f["scale"])
                        for t in range(f["count"])])
    loss = F.cross_entropy(logits, clean.query_y.reshape(-1))
    (g,) = torch.autograd.grad(loss, q)
    clear = g.abs() > 1e-3 * float(g.abs().max())
    want = (x + eps * g.sign().double()).clamp(0, 1)
    err = (result.query_x.double() - want).abs()[clear]
    assert err.numel() == 0 or float(err.max()) < 1e-6, \
        f"FGSM pixels off the gradient sign by {float(err.max()):.3g}"


def attack_breaks(draft):
    dt = draft.meta["facts"]["dtype"]
    out = [Break("batch", "mr.Episode(batch.support_x, batch.support_y, batch.query_x, "
                 "batch.query_y * 0 + 99, batch.classes)", "query labels out of range",
                 ("batch", "query_y", "batch.query_y")),
           Break("batch", "(batch.support_x, batch.support_y)", "a tuple", ("batch",)),
           Break("learner", "net", "a module that is no Learner", ("learner",))]
    if dt == "float32":
        out.append(Break("batch", "mr.Episode(batch.support_x, batch.support_y, "
                         "batch.query_x * 3 - 1, batch.query_y, batch.classes)",
                         "images outside [0, 1]", ("batch", "query_x", "batch.query_x")))
    return out


def _attack_params(kind):
    # a huge ways is no error while the batch's labels fit it (and nothing is computed)
    p = {"learner": Obj(), "batch": Obj(), "ways": Int(1, related=("batch",), huge="tolerated"),
         "eps": Float(0.0)}
    if kind != "fgsm":
        p.update({"steps": Int(0, huge="skip"), "step_size": Float(0.0)})
    p["norm"] = Choice(("linf", "l2"))
    if kind != "adversarial_queries":
        p["target"] = Choice(("query", "support"))
    if kind != "fgsm":
        p.update({"random_start": Bool(), "seed": Int(0, 2**64 - 1, huge="skip")})
    return p


def _attack_target(kind):
    names = [k for k in _attack_params(kind) if k not in ("learner", "batch", "ways")]
    kw = ", ".join(f"{k}={k}" for k in names)

    @st.composite
    def valid(draw):
        return attack_draft(draw, kind)

    return Target(name=f"robust.{kind}", call=f"mr.robust.{kind}(learner, batch, ways, {kw})",
                  params=_attack_params(kind), valid=valid(), check=check_attack,
                  relational=attack_breaks)


AS_FLOAT64 = ("def as_float64(x):\n"
              "    return x.double() / 255 if x.dtype == torch.uint8 else x.double()")


@st.composite
def _with_float64(draw):
    draft = draw(valid_predict())
    draft.setup.append(AS_FLOAT64)
    return draft


def check_call(result, args, meta):
    """The call gives differentiable logits equal to predict's (both in eval mode here)."""
    learner = args["learner"]
    sx, sy, qx = args["support_x"], args["support_y"], args["query_x"]
    ways = int(sy.max()) + 1
    assert isinstance(result, torch.Tensor) and tuple(result.shape) == (qx.shape[0], ways), \
        f"{type(result).__name__} {getattr(result, 'shape', '')}"
    assert result.requires_grad, "the call's logits carry no graph"
    want = learner.predict(sx, sy, qx)
    scale = 1 + float(want.abs().max())
    assert torch.allclose(result.detach().double(), want.double(), rtol=1e-5,
                          atol=1e-5 * scale), \
        f"call and predict differ by {float((result.detach() - want).abs().max()):.3g}"


PREDICT_PARAMS = {
    "support_x": Arr(IMAGE_DTYPES, (4,), lib="torch", related=("query_x",), empty="broken"),
    "support_y": Arr(("int64", "int32"), (1,), lib="torch", related=("support_x",),
                     empty="broken"),
    "query_x": Arr(IMAGE_DTYPES, (4,), lib="torch", related=("support_x",), empty="broken")}

TARGETS = [
    Target(name="learners.__call__", call="learner(support_x, support_y, query_x)",
           params=PREDICT_PARAMS, valid=_with_float64(), check=check_call,
           relational=predict_breaks),
    Target(name="learners.predict", call="learner.predict(support_x, support_y, query_x)",
           params={"support_x": Arr(IMAGE_DTYPES, (4,), lib="torch", related=("query_x",),
                                    empty="broken"),
                   "support_y": Arr(("int64", "int32"), (1,), lib="torch",
                                    related=("support_x",), empty="broken"),
                   "query_x": Arr(IMAGE_DTYPES, (4,), lib="torch", related=("support_x",),
                                  empty="broken")},
           valid=_with_float64(), check=check_predict, relational=predict_breaks),
    Target(name="learners.evaluate_batch", call="learner.evaluate_batch(batch, ways)",
           params={"batch": Obj(), "ways": Int(1, related=("batch",), huge="tolerated")},
           valid=valid_evaluate(), check=check_evaluate, relational=evaluate_breaks),
    _attack_target("fgsm"),
    _attack_target("pgd"),
    _attack_target("adversarial_queries"),
]
