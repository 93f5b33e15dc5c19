"""The house: imports among `pivot_jax` modules form no circle, no module imports a command module, and imports
sit at the top of a module unless a heavy dependency justifies importing it inside the function that needs it."""

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pivot_jax"
# Thin shells over the libraries: they parse flags, call libraries and print; nothing imports them. So is every
# `__main__` module (`python -m pivot_jax.convert`, `pivot_jax.data`, `pivot_jax.data.tfds_builders`).
COMMANDS = {"pivot_jax.train", "pivot_jax.evaluate", "pivot_jax.generate", "pivot_jax.report"}


def _is_command(module: str) -> bool:
    return module in COMMANDS or module.endswith(".__main__")


# What a library may import inside a function: these libraries, or a pivot_jax module that imports one of them
# at its top (directly or through other pivot_jax modules). Import times measured with `python -X importtime`
# after JAX, Flax and NumPy, which every `import pivot_jax` loads anyway; everything else (orbax ~0.1 s, gguf,
# jinja2, babel, tokenizers, sentencepiece, etils, absl: 1-20 ms each) goes at the top of the module.
HEAVY = {
    "seqio": "~2.8 s: TensorFlow and its ops",
    "tensorflow": "~2.1 s",
    "tensorflow_datasets": "~0.1 s itself, but its builders and readers load TensorFlow",
    "matplotlib": "matplotlib.pyplot ~0.3 s, for plots only",
    "comet": "optional (unbabel-comet, PyTorch); not installed by default",
    "torch": "~1.1 s, dev extra only",
    "transformers": "~0.4 s, dev extra only",
}
def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _trees() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The modules an import statement imports (absolute imports only)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.module is None or node.level:
        return set()
    # `from pivot_jax.data import formats` imports the module pivot_jax.data.formats
    return {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _placed_imports(tree: ast.Module, modules: set[str]) -> list[tuple[str, int, str]]:
    """(where, line, imported module) for every import: where is "top" (run on import, class bodies included),
    "function" (inside a def or lambda) or "typing" (under `if TYPE_CHECKING:`)."""
    found = []

    def walk(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function"
            elif where == "top" and _is_type_checking(child):
                inner = "typing"
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((where, child.lineno, target) for target in sorted(_targets(child, modules)))
            walk(child, inner)

    walk(tree, "top")
    return found


def _modules() -> set[str]:
    return set(_trees())


def _imports(modules: set[str]) -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top, inside functions or for type checking alike."""
    return {name: {t for _, _, t in _placed_imports(tree, modules) if t in modules and t != name}
            for name, tree in _trees().items()}


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
    return _imports(_modules())


def _is_heavy(target: str) -> bool:
    return target.split(".")[0] in HEAVY


def _heavy_modules(trees: dict[str, ast.Module]) -> set[str]:
    """The pivot_jax modules whose import loads a HEAVY library: directly or through other modules, at the top."""
    modules = set(trees)
    top = {name: {t for where, _, t in _placed_imports(tree, modules) if where == "top"}
           for name, tree in trees.items()}
    heavy = {name for name, targets in top.items() if any(map(_is_heavy, targets))}
    while True:
        more = {name for name, targets in top.items() if name not in heavy and targets & heavy}
        if not more:
            return heavy
        heavy |= more


def _unjustified(trees: dict[str, ast.Module]) -> list[str]:
    """Function-level imports of anything but a heavy library or a module that loads one."""
    modules, heavy = set(trees), _heavy_modules(trees)
    return [f"{name}:{line} imports {target} inside a function"
            for name, tree in sorted(trees.items())
            for where, line, target in _placed_imports(tree, modules)
            if where == "function" and not (_is_heavy(target) or target in heavy)]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_nothing_imports_a_command():
    importers = {(src, dst) for src, targets in _graph().items() for dst in targets if _is_command(dst)}
    assert importers == set()


def test_function_level_imports_only_of_heavy_modules():
    """Imports go at the top of a module, where a reader looks for them; inside a function only what a HEAVY
    library justifies (say which in a comment there)."""
    assert _unjustified(_trees()) == []


def test_the_walk_sees_cycles_and_function_level_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "pivot_jax.decode" in graph["pivot_jax.eval.predict"]  # a top-level import
    assert "pivot_jax.eval.run" in graph["pivot_jax.evaluate"]
    assert "pivot_jax.data.tasks" in graph["pivot_jax.eval.seqio_task"]  # `from pivot_jax.data.tasks import x`

    source = ("from typing import TYPE_CHECKING\nimport numpy as np\nif TYPE_CHECKING:\n    import seqio\n\n"
              "class A:\n    import json\n\n    def f(self):\n        import tensorflow as tf\n"
              "        from pivot_jax.data import formats\n        g = lambda: __import__('os')\n")
    modules = {"pivot_jax.data", "pivot_jax.data.formats", "pivot_jax.light", "pivot_jax.heavy",
               "pivot_jax.uses_heavy", "pivot_jax.lazy"}
    assert _placed_imports(ast.parse(source), modules) == [
        ("top", 1, "typing"), ("top", 2, "numpy"), ("typing", 4, "seqio"), ("top", 7, "json"),
        ("function", 10, "tensorflow"), ("function", 11, "pivot_jax.data.formats")]
    trees = {name: ast.parse(text) for name, text in {
        "pivot_jax.light": "import json\n",
        "pivot_jax.heavy": "import seqio\n",
        "pivot_jax.uses_heavy": "from pivot_jax import heavy\n",
        "pivot_jax.lazy": ("def f():\n    import seqio\n    from pivot_jax import uses_heavy\n"
                           "    from pivot_jax import light\n    import numpy\n"),
    }.items()}
    assert _heavy_modules(trees) == {"pivot_jax.heavy", "pivot_jax.uses_heavy"}
    assert _unjustified(trees) == ["pivot_jax.lazy:4 imports pivot_jax.light inside a function",
                                   "pivot_jax.lazy:5 imports numpy inside a function"]
