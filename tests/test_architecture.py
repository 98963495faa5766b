"""The structure the issue asks the folder tree to show (#15): no import cycles between the
core's subpackages, no module far over 400 lines, a typed package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "framework"
MAX_LINES = 420  # "no module over ~400 lines"


def _unit(module: str) -> str | None:
    """The subpackage (or top-level module) of the core a dotted module name belongs to."""
    parts = module.split(".")
    if parts[0] != "framework" or len(parts) < 2:
        return None
    return parts[1]


def _run_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of ``tree`` the code runs: every one, function-level included, except those
    inside an ``if`` whose test mentions ``TYPE_CHECKING`` (that whole ``if``, ``else`` too, is skipped).

    One pass over the tree: a skipped ``if`` is not descended into.
    """
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.expr):
            continue  # no statement, so no import, lives inside an expression
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def import_graph() -> dict[str, dict[str, list[str]]]:
    """``{unit: {imported unit: [file:line, ...]}}`` over every import the code runs
    (function-level imports included, ``if TYPE_CHECKING`` blocks excluded)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE)
        source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in _run_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if not node.module or node.level != 0:
                    continue
                names = [node.module]
                if node.module == "framework":
                    names += [f"framework.{a.name}" for a in node.names]
            else:
                names = [a.name for a in node.names]
            for name in names:
                target = _unit(name)
                if target and target != source:
                    graph.setdefault(source, {}).setdefault(target, []).append(f"{rel}:{node.lineno}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, {}):
            if nxt in path:
                found.append([*path[path.index(nxt) :], nxt])
            elif len(path) < 12:
                walk(nxt, [*path, nxt])

    for start in graph:
        walk(start, [start])
    return found


def test_no_import_cycles_between_subpackages() -> None:
    graph = import_graph()
    cycles = _cycles(graph)
    detail = [
        " -> ".join(cycle) + f"  ({cycle[0]} -> {cycle[1]} at {graph[cycle[0]][cycle[1]][:3]})"
        for cycle in cycles
    ]
    assert not cycles, "import cycles between the core's subpackages:\n" + "\n".join(sorted(set(detail)))


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b": ["a.py:1"]}, "b": {"a": ["b.py:1"]}, "c": {"a": ["c.py:1"]}}
    assert ["a", "b", "a"] in _cycles(graph)


def test_every_subpackage_says_what_it_owns() -> None:
    for package in sorted(p for p in CORE.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"{package.name}/__init__.py needs a docstring saying what it owns"


def test_no_module_far_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for base in (CORE, ROOT / "plugins")
        for path in base.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_package_is_typed() -> None:
    assert (CORE / "py.typed").exists()
