"""The house: imports among `pivot_jax` modules form no circle, and no module imports a command module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pivot_jax"
# Thin shells over the libraries: they parse flags, call libraries and print; nothing imports them.
COMMANDS = {"pivot_jax.train", "pivot_jax.evaluate", "pivot_jax.generate", "pivot_jax.convert.__main__",
            "pivot_jax.data.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(modules: set[str]) -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top or inside functions alike."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pivot_jax.data import formats` imports the module pivot_jax.data.formats
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _graph():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return _imports(modules)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_nothing_imports_a_command():
    importers = {(src, dst) for src, targets in _graph().items() for dst in targets if dst in COMMANDS}
    assert importers == set()


def test_the_walk_sees_cycles_and_function_level_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "pivot_jax.decode" in graph["pivot_jax.eval.predict"]  # a top-level import
    assert "pivot_jax.convert.gguf" in graph["pivot_jax.pretrained"]  # inside a function
    assert "pivot_jax.eval.run" in graph["pivot_jax.evaluate"]
