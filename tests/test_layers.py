"""The package's layers stay as DESIGN.md §4 draws them: no import circles, arrows down only,
each heavy dependency behind its one owner. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bigsink"

#: The wings, lowest first: a module may import its own level and the levels below it.
LEVELS: tuple[tuple[str, ...], ...] = (
    ("bigsink.errors", "bigsink._xp", "bigsink._fs", "bigsink._net", "bigsink._version",
     "bigsink._progress",
     "bigsink.scratch", "bigsink.problem"),
    ("bigsink.costs",),
    ("bigsink.kernels",),
    ("bigsink.executors",),
    ("bigsink.result", "bigsink.operators"),
    ("bigsink.solver",),
    ("bigsink.plans", "bigsink.io", "bigsink.toolbox", "bigsink.assign", "bigsink.ot"),
    ("bigsink.sweep", "bigsink.plot", "bigsink.bench", "bigsink.cli", "bigsink.autodiff",
     "bigsink"),
)

#: Third-party packages that only one module (or subpackage) may import.
OWNERS = {
    "dask": "bigsink.executors.dask",
    "distributed": "bigsink.executors.dask",
    "ray": "bigsink.sweep",
    "cupy": "bigsink._xp",
    "matplotlib": "bigsink.plot",
    "torch": "bigsink.autodiff",
    "jax": "bigsink.autodiff",
}

#: Packages a wing may not import at all (DESIGN.md §4: pure per-block maths).
FORBIDDEN = {"bigsink.kernels": ("zarr",), "bigsink.costs": ("numba",)}


def module_name(path: Path) -> str:
    """``bigsink/costs/zarr.py`` -> ``bigsink.costs.zarr``; a package's ``__init__`` is the
    package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """``(bigsink modules, top-level third-party packages)`` that module ``name`` imports
    anywhere in its body (functions included). ``from pkg import x`` imports ``pkg.x`` when
    that is a module, else ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner: set[str] = set()
    outer: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == "bigsink" or target.startswith("bigsink."):
                while target not in known:            # bigsink.x.name -> bigsink.x
                    target = target.rpartition(".")[0]
                if target != name:
                    inner.add(target)
            else:
                outer.add(target.split(".")[0])
    return inner, outer


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The package's import graph and each module's third-party imports."""
    mods = modules()
    known = set(mods)
    edges, third = {}, {}
    for name, path in mods.items():
        edges[name], third[name] = imports(name, path, known)
    return edges, third


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``edges``: its strongly connected components of more than one
    module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def level(name: str) -> int:
    """The wing of a module: the level whose longest prefix names it."""
    best, depth = -1, -1
    for k, names in enumerate(LEVELS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = k, len(prefix)
    assert best >= 0, f"{name} belongs to no layer: add it to LEVELS"
    return best


def test_cycle_finder_finds_a_circle_through_a_function_level_import() -> None:
    """The checker itself can fail: a circle closed only by an import inside a function
    (how all three of the old circles were closed) is found."""
    source = "def f():\n    from .costs import pointcloud\n"
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    edges, _ = graph()
    assert cycles(edges) == []


def test_arrows_point_down_only() -> None:
    edges, _ = graph()
    upward = [f"{a} (level {level(a)}) imports {b} (level {level(b)})"
              for a, targets in edges.items() for b in targets if level(b) > level(a)]
    assert upward == []


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_heavy_dependencies_have_one_owner(package: str) -> None:
    _, third = graph()
    owner = OWNERS[package]
    users = sorted(name for name, pkgs in third.items() if package in pkgs
                   and not (name == owner or name.startswith(owner + ".")))
    assert users == [], f"{package} is imported outside {owner}"


def test_wings_keep_out_what_they_must_not_import() -> None:
    _, third = graph()
    bad = sorted((name, pkg) for name, pkgs in third.items()
                 for wing, banned in FORBIDDEN.items()
                 if name == wing or name.startswith(wing + ".")
                 for pkg in banned if pkg in pkgs)
    assert bad == []


def test_the_loop_names_no_concrete_step() -> None:
    """The solver loop is written against the Step contract only: no concrete step class is
    imported or named in it, so a new kind of iteration needs no change there."""
    from bigsink.solver import steps

    concrete = [name for name, obj in vars(steps).items()
                if isinstance(obj, type) and obj.__module__ == steps.__name__
                and hasattr(obj, "step") and name != "Step"]
    assert {"LogStep", "ScalingStep", "Fallback"} <= set(concrete)
    source = (PACKAGE / "solver" / "loop.py").read_text()
    assert [name for name in concrete if name in source] == []
