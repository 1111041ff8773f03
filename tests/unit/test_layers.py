"""Imports run one way: cli -> launch/report -> sweep -> train -> tasks/variants -> config ->
utilities, with no circle.

The walk reads every module of the package as source (AST), so an import inside a function counts
as much as one at the top of a file: it is a dependency all the same, only a later one. An import
under ``if TYPE_CHECKING:`` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lorasweep

#: Lowest first. A module may import its own layer's modules and lower layers', never higher.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("utilities", ("lorasweep._values", "lorasweep._json", "lorasweep._tags", "lorasweep._phase",
                   "lorasweep._console",
                   "lorasweep.paths",
                   "lorasweep.text", "lorasweep.recipe", "lorasweep.published")),
    ("config", ("lorasweep.config",)),
    # the package itself re-exports the adapters (``lorasweep.apply_variant``)
    ("tasks/variants", ("lorasweep.tasks", "lorasweep.variants", "lorasweep")),
    ("train", ("lorasweep.train",)),
    ("sweep", ("lorasweep.sweep",)),
    ("launch/report", ("lorasweep.launch", "lorasweep.report")),
    ("cli", ("lorasweep.cli", "lorasweep.__main__")),
)
ORDER = " -> ".join(name for name, _ in reversed(LAYERS))


def modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's ``__init__``), for every .py file under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(root: Path, package: str) -> list[tuple[str, str, int]]:
    """Every (importer, imported, line) inside the package, module level or not. ``from .x import
    y`` names the module ``x.y`` when that is a module, else ``x`` (``y`` is a name in it)."""
    mods = modules(root, package)
    edges = []
    for name, (path, is_package) in mods.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target not in mods and "." in target:  # import a.b.c where c is a name
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    edges.append((name, target, node.lineno))
    return edges


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return index


def back_up(edges: list[tuple[str, str, int]]) -> list[str]:
    """The imports from a lower layer to a higher one, as readable lines."""
    return [f"{a} (line {line}, layer {LAYERS[layer_of(a)][0]}) imports {b} "
            f"(layer {LAYERS[layer_of(b)][0]})"
            for a, b, line in edges if layer_of(a) < layer_of(b)]


def circles(edges: list[tuple[str, str, int]]) -> list[list[str]]:
    """One circle (a -> b -> ... -> a) per group of modules that import each other."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for group in groups:  # a shortest way back to the start, inside the group
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph.get(v, ()) & group):
                if w == start:
                    found.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return found


def _package() -> tuple[Path, list[tuple[str, str, int]]]:
    root = Path(lorasweep.__file__).parent
    return root, imports(root, "lorasweep")


def test_imports_run_one_way():
    root, edges = _package()
    assert len(edges) > 100, "the walk found almost no imports: it reads the wrong folder"
    bad = back_up(edges)
    assert not bad, (f"imports must run {ORDER}; these run back up:\n  " + "\n  ".join(bad)
                     + "\nmove the code to the layer that needs it, or what it needs lower")


def test_no_import_circle():
    _, edges = _package()
    found = circles(edges)
    assert not found, "import circles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_every_module_has_a_layer():
    root, _ = _package()
    for name in modules(root, "lorasweep"):
        layer_of(name)


def test_the_walk_sees_imports_inside_functions_and_circles(tmp_path):
    """The checker itself: on a small package with a function-level import that runs back up
    (config -> sweep) and a circle (sweep.a <-> sweep.b), it names both."""
    pkg = tmp_path / "lorasweep"
    (pkg / "sweep").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def check():\n    from .sweep.a import f\n    return f\n")
    (pkg / "sweep" / "__init__.py").write_text("")
    (pkg / "sweep" / "a.py").write_text("from . import b\n\ndef f():\n    return b\n")
    (pkg / "sweep" / "b.py").write_text("def g():\n    from .a import f\n    return f\n")
    edges = imports(pkg, "lorasweep")
    assert ("lorasweep.config", "lorasweep.sweep.a", 2) in edges
    assert back_up(edges) == ["lorasweep.config (line 2, layer config) imports lorasweep.sweep.a "
                              "(layer sweep)"]
    assert circles(edges) == [["lorasweep.sweep.a", "lorasweep.sweep.b", "lorasweep.sweep.a"]]
