"""The tree's rules, read from the source with ``ast``: no import circles, modules of a readable size, a core
without Dagster, one module (``settings.py``) that reads the environment, and two that tell S3 from local.

The allow-lists name today's offenders; they may only shrink: an entry that no longer offends fails the test
too, so it is removed when its module is fixed.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "datalake_pipelines"
ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450

# Modules over MAX_LINES today (to be split); the list can only shrink.
OVERSIZED: set[str] = set()
# Circles closed only by an import inside a function (no import-time failure, still one design in two
# modules); the list can only shrink.
KNOWN_CIRCLES: set[frozenset[str]] = set()
# The modules that decide whether a location is on S3: the storage chooser and URI parser, and the lake chooser.
# Everything else asks them (``storage_kind``, ``lake_kind``, ``duckdb_file_of``) or the object it holds.
BACKEND_CHOOSERS = {
    "datalake_pipelines/core/storage/backends.py",
    "datalake_pipelines/core/lake/open.py",
}
# Modules still testing the scheme themselves; the list can only shrink.
SCHEME_TESTS: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def imported(name: str, *, top_level_only: bool = False) -> set[str]:
    """Every module ``name`` imports (absolute names, relative imports resolved), third-party ones included.

    ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module of the package.
    ``top_level_only``: only the imports that run when the module is imported (not in functions or ``if``).
    Imports under ``if TYPE_CHECKING:`` never run, so they are not counted (they cannot close a circle).
    """
    is_package = modules()[name].name == "__init__.py"
    module = tree(name)
    for node in ast.walk(module):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            node.body = []
    nodes = module.body if top_level_only else ast.walk(module)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules().keys()
            found.update(submodules)
            if len(submodules) < len(node.names):  # some name is an attribute of ``target`` itself
                found.add(target)
    return found


def circles(top_level_only: bool) -> list[frozenset[str]]:
    """The import circles of the package: :func:`strongly_connected` over its import graph."""
    graph = {n: {m for m in imported(n, top_level_only=top_level_only) if m in modules() and m != n} for n in modules()}
    return strongly_connected(graph)


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one node of ``graph`` (node -> the nodes it points at; Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

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
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports():
    """The checker itself: relative imports resolve, function-level imports count, and circles are found."""
    assert "datalake_pipelines.cli.common" in imported("datalake_pipelines.cli.main", top_level_only=True)
    assert "datalake_pipelines.cli.upload" in imported("datalake_pipelines.cli.main", top_level_only=True)
    assert "datalake_pipelines.cli" not in imported("datalake_pipelines.cli.main")  # ``from . import upload``
    assert "datalake_pipelines.settings" in imported("datalake_pipelines.core.lake.layout", top_level_only=True)
    assert "datalake_pipelines.core.catalog.query" in imported("datalake_pipelines.cli.catalog")
    assert "datalake_pipelines.core.catalog.query" not in imported(
        "datalake_pipelines.cli.catalog", top_level_only=True
    )
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "f"}, "f": {"e"}}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["e", "f"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert circles(top_level_only=True) == []
    found = set(circles(top_level_only=False))
    assert found - KNOWN_CIRCLES == set(), "new import circle(s)"
    assert KNOWN_CIRCLES - found == set(), "fixed: remove from KNOWN_CIRCLES"


def test_modules_are_at_most_450_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text("utf-8").splitlines()) for p in modules().values()}
    over = {path for path, n in sizes.items() if n > MAX_LINES}
    assert {p: sizes[p] for p in over - OVERSIZED} == {}, f"modules over {MAX_LINES} lines"
    assert OVERSIZED - over == set(), "now short enough: remove from OVERSIZED"


def test_core_imports_no_dagster_and_nothing_above_it():
    """``core/`` is the domain: no Dagster, and no import of the layers built on it (defs, lib, services, cli)."""
    above = tuple(f"{PACKAGE}.{layer}" for layer in ("defs", "lib", "services", "cli", "definitions", "client"))
    bad = {}
    for name in modules():
        if name.startswith(f"{PACKAGE}.core"):
            wrong = sorted(m for m in imported(name) if m.split(".")[0].startswith("dagster") or m.startswith(above))
            if wrong:
                bad[name] = wrong
    assert bad == {}


def environment_reads(module: ast.Module) -> list[str]:
    """``os.environ[...]``, ``os.environ.get(...)``, ``os.getenv(...)`` in ``module`` whose key is not a literal
    outside the ``DATALAKE_``/``AWS_`` families (a key held in a variable counts: it could be one)."""

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    reads = []
    for node in ast.walk(module):
        key = None
        if isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if (func.attr in ("get", "pop", "setdefault") and is_environ(func.value)) or func.attr == "getenv":
                key = node.args[0] if node.args else None
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getenv":
            key = node.args[0] if node.args else None
        if key is None:
            continue
        literal = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
        if literal is None or literal.startswith(("DATALAKE_", "AWS_")):
            reads.append(f"line {node.lineno}: {ast.unparse(node)}")
    return reads


def test_the_environment_checker_sees_reads():
    source = """
import os
from os import environ, getenv
NAME = "DATALAKE_X"
a = os.environ.get("DATALAKE_BASE_PATH", "")
b = os.environ["AWS_REGION"]
c = environ.get(NAME)
d = getenv("DATALAKE_NUM_PROC")
e = os.environ.get("DAGSTER_HOME")
os.environ["DAGSTER_HOME"] = "x"
f = {**os.environ, "DATALAKE_SENSOR_INTERVAL": "5"}
"""
    assert [r.split(":")[0] for r in environment_reads(ast.parse(source))] == ["line 5", "line 6", "line 7", "line 8"]


def test_only_settings_reads_the_environment():
    others = [n for n in modules() if n != f"{PACKAGE}.settings"]
    bad = {n: environment_reads(tree(n)) for n in others if environment_reads(tree(n))}
    assert bad == {}, "read DATALAKE_*/AWS_* through datalake_pipelines.settings.load()"


def scheme_tests(text: str) -> list[int]:
    """Line numbers of ``text`` that name an ``is_s3...`` test (the S3-or-local question)."""
    return [n for n, line in enumerate(text.splitlines(), 1) if "is_s3" in line]


def test_only_the_choosers_tell_s3_from_local():
    """``open_lake``/``lake_kind`` choose a lake's backend, ``open_storage``/``storage_kind`` a location's; nothing
    else tests ``is_s3``."""
    assert scheme_tests("x = 1\nif is_s3_uri(base):\n    from .s3 import is_s3_base\n") == [2, 3]
    found = {}
    for path in modules().values():
        relative = path.relative_to(ROOT).as_posix()
        lines = scheme_tests(path.read_text(encoding="utf-8"))
        if lines and relative not in BACKEND_CHOOSERS:
            found[relative] = lines
    assert {p: n for p, n in found.items() if p not in SCHEME_TESTS} == {}, "ask storage_kind/lake_kind or the object"
    assert SCHEME_TESTS - found.keys() == set(), "fixed: remove from SCHEME_TESTS"
    assert scheme_tests(modules()["datalake_pipelines.core.storage.backends"].read_text(encoding="utf-8"))
