"""The layout is the architecture: each package is one layer, and imports point one way only.

    core → photo → storage → model → learn | serve → app | cli

A module may import its own layer or any layer below it; `learn` and `serve` stand side by side
and never import each other; nothing imports `app` or `cli` but the pages and the entry points.
Every import counts, the ones inside functions (lazy) and under TYPE_CHECKING included, and no
two modules may import each other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "facexpr"

# Rank of each layer package: a module may import a rank at or below its own.
RANKS = {"core": 0, "photo": 1, "storage": 2, "model": 3, "learn": 4, "serve": 4, "app": 5, "cli": 5}
# Peers of one rank that must not import each other.
APART = [{"learn", "serve"}, {"app", "cli"}]
# Top-level modules: the public surface (`import facexpr`, `python -m facexpr`).
ENTRY_POINTS = {"facexpr", "facexpr.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every facexpr module that SOURCE imports, at any depth of the file (lazy imports too)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from facexpr.app import jobs` imports the module facexpr.app.jobs
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != module}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py") if "models" not in p.parts}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_every_module_sits_in_a_layer():
    homeless = sorted(m for m in _graph() if _layer(m) is None and m not in ENTRY_POINTS)
    assert homeless == [], f"modules outside any layer package: {homeless}"


def test_imports_never_run_up_a_layer():
    wrong = []
    for module, imported in _graph().items():
        mine = _layer(module)
        if mine is None:
            continue
        for other in imported:
            theirs = _layer(other)
            if theirs is None:
                # Only the entry points sit outside the layers; importing them from inside is upward.
                wrong.append(f"{module} → {other}")
            elif RANKS[theirs] > RANKS[mine] or (theirs != mine and {mine, theirs} in APART):
                wrong.append(f"{module} ({mine}) → {other} ({theirs})")
    assert wrong == [], "imports against the layers:\n" + "\n".join(sorted(wrong))


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle found by a depth-first walk, as the modules round it."""
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                circles.append([*path[path.index(other):], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_module_imports_round_a_circle():
    circles = _circles(_graph())
    assert circles == [], "import circles:\n" + "\n".join(" → ".join(c) for c in circles)


def test_the_circle_finder_finds_a_long_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_passes_450_lines(path: Path):
    assert len(path.read_text().splitlines()) <= 450


def test_the_checker_sees_lazy_relative_and_type_only_imports():
    """An import hidden in a function or under TYPE_CHECKING must be found, or the rules prove nothing."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import facexpr.learn.train\n"
              "def f():\n    from facexpr.app import ui\n    from ..serve import recognizer\n")
    assert _imports_of(source, "facexpr.core.probe", False) >= {
        "facexpr.learn.train", "facexpr.app.ui", "facexpr.serve.recognizer"}
