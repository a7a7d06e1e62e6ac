"""The import directions inside ``registry_service``, checked on the source (every module parsed with
:mod:`ast`, nothing imported): the domain never imports the web UI or the worker process, the web UI
and the worker never import the database layer (they go through domain services), and the merge-jobs
domain and the worker package do not import each other in a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import registry_service

PACKAGE = "registry_service"
ROOT = Path(registry_service.__file__).resolve().parent
DOMAIN = f"{PACKAGE}.domain"
MERGE_JOBS = f"{PACKAGE}.domain.merge_jobs"
WEB = f"{PACKAGE}.web"
WORKER = f"{PACKAGE}.worker"
DB = f"{PACKAGE}.db"


def module_name(path: Path) -> str:
    """``registry_service/web/pages.py`` -> ``registry_service.web.pages`` (a package is its ``__init__``)."""
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Everything ``tree`` imports, as absolute dotted names: ``from a import b`` yields both ``a`` and
    ``a.b`` (``b`` may be a module). Imports inside functions and ``TYPE_CHECKING`` blocks count too."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names if alias.name != "*")


def imports_of(name: str, path: Path) -> set[str]:
    """The absolute names module ``name`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return set(imported_names(tree, name, path.name == "__init__.py"))


def within(name: str, package: str) -> bool:
    """Whether ``name`` is ``package`` or inside it."""
    return name == package or name.startswith(package + ".")


def graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    mods = modules()
    return {name: {i for i in imports_of(name, path) if i in mods} for name, path in mods.items()}


def violations(edges: dict[str, set[str]], source: str, forbidden: Iterable[str]) -> list[str]:
    """``importer -> imported`` for every import from inside ``source`` into any ``forbidden`` package."""
    banned = tuple(forbidden)
    return sorted(f"{m} -> {i}" for m, targets in edges.items() if within(m, source)
                  for i in targets if any(within(i, b) for b in banned))


def reachable(edges: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    """Every module reached from ``start`` by following imports."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges.get(m, ()))
    return seen


def test_the_layers_are_there() -> None:
    """The checks below look at real packages (a renamed one would make them pass vacuously)."""
    names = modules()
    for package in (DOMAIN, MERGE_JOBS, WEB, WORKER, DB):
        assert package in names, f"{package} is gone: update this test"
    assert imports_of(f"{WORKER}.process", names[f"{WORKER}.process"]) & set(names), "the parser found no imports"


def test_domain_imports_neither_web_nor_worker() -> None:
    assert violations(graph(), DOMAIN, [WEB, WORKER]) == []


def test_web_does_not_import_the_database_layer() -> None:
    assert violations(graph(), WEB, [DB]) == []


def test_worker_does_not_import_the_database_layer() -> None:
    assert violations(graph(), WORKER, [DB]) == []


def test_merge_jobs_and_worker_are_not_a_cycle() -> None:
    """The worker imports the merge-jobs domain; nothing the domain imports leads back to the worker."""
    edges = graph()
    from_domain = reachable(edges, [m for m in edges if within(m, MERGE_JOBS)])
    from_worker = reachable(edges, [m for m in edges if within(m, WORKER)])
    back = sorted(m for m in from_domain if within(m, WORKER))
    forth = sorted(m for m in from_worker if within(m, MERGE_JOBS))
    assert not (back and forth), f"merge_jobs reaches {back}, the worker reaches {forth}"
