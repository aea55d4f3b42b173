"""The layers of the code, read from every module's imports with `ast`.

Top to bottom: worker.cli -> dashboard -> worker.queue / worker.results /
worker.inference -> worker.training -> worker.data -> db (migrations sits with db).
No module imports from a layer above it, and no two modules import each other,
directly or round a longer loop. docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("db", "migrations", "worker", "dashboard")

# A module's layer is that of the longest prefix listed here.
LAYERS = {
    "db": 0,
    "migrations": 0,
    "worker.data": 1,
    "worker.training": 2,
    "worker.queue": 3,
    "worker.results": 3,
    "worker.inference": 3,
    "dashboard": 4,
    "worker.cli": 5,
    "worker": 1,  # worker/__init__.py only
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "versions" in path.parts:  # Alembic revisions import only alembic/sqlalchemy
                continue
            found[module_name(path)] = path
    return found


MODULES = all_modules()


def resolve(name: str) -> str | None:
    """The project module an import names (a module, or the package it comes from)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module top) for every import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function = {
        id(inner)
        for outer in ast.walk(tree)
        if isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(outer)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] or [node.module]
        else:
            continue
        for name in names:
            target = resolve(name)
            if target is not None:
                out.append((target, node.lineno, id(node) not in in_function))
    return out


GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(REPO)}:{line}"


def test_every_module_is_read():
    assert {"db.jobs", "worker.queue.service", "dashboard.data", "worker.cli.options"} <= set(
        MODULES
    )
    assert len(MODULES) > 60


def test_db_imports_nothing_from_worker_or_dashboard():
    bad = [
        f"{where(m, line)} imports {t}"
        for m, edges in GRAPH.items()
        if m.split(".")[0] in ("db", "migrations")
        for t, line, _ in edges
        if t.split(".")[0] in ("worker", "dashboard")
    ]
    assert not bad, bad


def test_worker_imports_nothing_from_dashboard():
    bad = [
        f"{where(m, line)} imports {t}"
        for m, edges in GRAPH.items()
        if m.startswith("worker")
        for t, line, _ in edges
        if t.startswith("dashboard")
    ]
    assert not bad, bad


def test_dashboard_does_not_use_the_cli():
    bad = [
        f"{where(m, line)} imports {t}"
        for m, edges in GRAPH.items()
        if m.startswith("dashboard")
        for t, line, _ in edges
        if t.startswith("worker.cli")
    ]
    assert not bad, bad


def test_no_module_imports_from_a_layer_above_it():
    bad = [
        f"{where(m, line)} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, edges in GRAPH.items()
        for t, line, _ in edges
        if layer(t) > layer(m)
    ]
    assert not bad, bad


def _parent_packages(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles():
    # Importing a.b.c also runs a/__init__ and a/b/__init__; that implicit edge to a
    # parent package is not an import the module makes, so it is not counted.
    edges = defaultdict(set)
    for m, found in GRAPH.items():
        for t, _, _ in found:
            if t != m and t not in _parent_packages(m):
                edges[m].add(t)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for v in list(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_project_imports_sit_at_module_top_outside_the_cli():
    # Only the CLI defers imports, so that `segbench grid` or `--help` does not load
    # torch, Celery or a database driver.
    bad = [
        f"{where(m, line)} imports {t} inside a function"
        for m, edges in GRAPH.items()
        if not m.startswith("worker.cli")
        for t, line, at_top in edges
        if not at_top
    ]
    assert not bad, bad


def test_modules_stay_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_module_getattr_shims():
    shims = [
        str(p.relative_to(REPO))
        for p in MODULES.values()
        if any(
            isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
            for n in ast.parse(p.read_text()).body
        )
    ]
    assert not shims, shims


MARKDOWN_NAME = re.compile(r"\b([A-Za-z0-9_-]+\.md)\b")


@pytest.mark.parametrize("folder", ["db", "worker", "dashboard", "migrations", "tests", "bench"])
def test_code_names_no_document_outside_the_repository(folder):
    """Every Markdown file code names is one of the repository's own, and no code
    points into a folder beside the repository."""
    own = {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts}
    beside = [d.name for d in REPO.parent.iterdir() if d.is_dir() and d != REPO]
    bad = []
    for p in (REPO / folder).rglob("*.py"):
        text = p.read_text()
        bad += [
            f"{p.relative_to(REPO)} names {m}" for m in MARKDOWN_NAME.findall(text) if m not in own
        ]
        bad += [f"{p.relative_to(REPO)} points at ../{d}" for d in beside if f"../{d}/" in text]
    assert not bad, bad


def test_the_map_names_every_module():
    """docs/architecture.md is the map: every module of db/, worker/ and dashboard/ is
    named there by its path from the repository root (a package's __init__ and Alembic
    revisions aside), and every Python file the map names exists.

    A file name alone does not count: report.py, weights.py, workers.py and others
    exist in several packages, so one of them named would pass for all."""
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([\w./-]+\.py)`", text))
    missing = [
        rel.as_posix()
        for rel in sorted(p.relative_to(REPO) for p in MODULES.values())
        if rel.name != "__init__.py" and rel.parts[0] != "migrations"
        if rel.as_posix() not in named
    ]
    assert not missing, f"docs/architecture.md does not name: {missing}"
    absent = sorted(n for n in named if not (REPO / n).is_file())
    assert not absent, f"docs/architecture.md names files that do not exist: {absent}"
