"""No import cycle among wmtp's modules (issue 14): module-level imports only (also inside top-level if / try /
class blocks; not inside functions, which import lazily, and not under `if TYPE_CHECKING`)."""

from __future__ import annotations

import ast
from pathlib import Path

import wmtp

SRC = Path(wmtp.__file__).parent.parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every .py under root (a package is its __init__.py)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `name` imports at module level (`from pkg import sub` names pkg.sub)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
            for block in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(getattr(node, block, None), list):
                    visit(getattr(node, block))

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def test_wmtp_has_no_import_cycle():
    graph = import_graph(SRC)
    assert "wmtp.config" in graph["wmtp.data.synthetic.problems"]  # the graph holds the package's imports
    assert cycles(graph) == []


def test_a_cycle_is_found_but_not_through_type_checking_or_function_imports(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "__init__.py").write_text("")
    (tmp_path / "p" / "a.py").write_text("from p import b\n")
    (tmp_path / "p" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import c\n"
                                         "from . import a\n")
    (tmp_path / "p" / "c.py").write_text("import p.b\n\n\ndef f():\n    from p import a\n")
    graph = import_graph(tmp_path)
    assert graph == {"p": set(), "p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.b"}}
    assert cycles(graph) == [["p.a", "p.b"]]
