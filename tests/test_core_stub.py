"""The hand-written _core.pyi matches the compiled module: names, kinds and signatures."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import metarobust
from metarobust import _core

STUB = Path(metarobust.__file__).with_name("_core.pyi")


def stub_items():
    tree = ast.parse(STUB.read_text())
    funcs, classes, values = {}, {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values.add(node.target.id)
    return funcs, classes, values


def params(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in node.args.args if a.arg not in ("self", "cls")]


def test_every_public_name_is_typed_and_exists():
    funcs, classes, values = stub_items()
    public = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    typed = set(funcs) | set(classes) | values
    typed.discard("FloatArray")
    # Private names the stub types (test hooks) must exist too.
    public |= {n for n in typed if n.startswith("_") and hasattr(_core, n)}
    assert public - typed == set(), "in the module, missing from the stub"
    assert typed - public == set(), "in the stub, missing from the module"


def test_function_signatures_match():
    funcs, _, _ = stub_items()
    for name, node in funcs.items():
        sig = inspect.signature(getattr(_core, name))
        assert list(sig.parameters) == params(node), name
        defaults = node.args.defaults
        runtime_defaults = [p.default for p in sig.parameters.values()
                            if p.default is not inspect.Parameter.empty]
        assert [ast.literal_eval(d) for d in defaults] == runtime_defaults, name


def test_class_members_match():
    _, classes, _ = stub_items()
    for cname, cnode in classes.items():
        cls = getattr(_core, cname)
        members = {n.name: n for n in cnode.body if isinstance(n, ast.FunctionDef)}
        runtime = {n for n in dir(cls) if not n.startswith("_")}
        assert set(members) - {"__new__"} == runtime, cname
        sig = inspect.signature(cls)
        assert list(sig.parameters) == params(members["__new__"])
        for name in runtime:
            node = members[name]
            decorators = [d.id for d in node.decorator_list if isinstance(d, ast.Name)]
            is_prop = "property" in decorators
            assert is_prop == isinstance(inspect.getattr_static(cls, name),
                                         type(_core.SamplerCore.ways)), name
            if not is_prop:
                assert list(inspect.signature(getattr(cls, name)).parameters)[1:] == params(node)
