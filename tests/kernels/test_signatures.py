"""Kernel signatures read as attorch's do (issue 21): every pointer and stride argument of every
@triton.jit function in kernels/ is named in its docstring, where its tensor and layout are said."""
import ast
import pathlib
import re

import pytest

KERNELS = pathlib.Path(__file__).resolve().parent.parent.parent / "kernels"
STRIDE = re.compile(r"^s[a-z]?[nchw]$")  # sxn, syh, sdw, sn, sh, ...


def jit_functions():
    for path in sorted(KERNELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
                yield path.name, node


def undocumented(node) -> list[str]:
    doc = ast.get_docstring(node) or ""
    words = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", doc))
    return [a.arg for a in node.args.args
            if (a.arg.endswith("_ptr") or STRIDE.match(a.arg)) and a.arg not in words]


@pytest.mark.parametrize("name,node", [pytest.param(f, n, id=f"{f}:{n.name}") for f, n in jit_functions()])
def test_every_pointer_and_stride_is_documented(name, node):
    assert ast.get_docstring(node), f"{name}:{node.name} has no docstring"
    assert undocumented(node) == [], f"{name}:{node.name}"


def test_the_check_sees_an_undocumented_pointer():
    node = ast.parse('def k(x_ptr, y_ptr, sxn, N):\n    """x_ptr: the input; sxn its stride"""\n').body[0]
    assert undocumented(node) == ["y_ptr"]
    assert len(list(jit_functions())) >= 25
