"""The layering of ``sdk``'s imports, read from the source with :mod:`ast` (nothing is imported).

- no import cycle among ``sdk`` modules at module level (what runs on import);
- none either through the method registry, the signature code, the tuners or the adapter-module
  core when imports inside functions count too (a deferred import only hides a cycle);
- the tuners do not import the method registry (registering a method is no import side effect),
  and the code around them (core, format, model, checks) imports no tuner: it asks the method;
- ``sdk`` never imports ``registry_service`` (the service builds on the SDK, not the other way round).

Imports under ``if TYPE_CHECKING:`` never run and are left out, except for the last rule.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SPEC = importlib.util.find_spec("sdk")  # finds the package on the path without running it
assert _SPEC is not None and _SPEC.origin is not None
ROOT = Path(_SPEC.origin).resolve().parent

#: Modules the issue names: no cycle may pass through them, even through imports inside functions.
LAYERED = ("sdk.methods", "sdk.signature", "sdk.tuners", "sdk.layers", "sdk.routing", "sdk.modules_to_save")
#: Code that works with any method and so must not import a method's package.
METHOD_AGNOSTIC = (
    "sdk.layers", "sdk.routing", "sdk.modules_to_save", "sdk.methods", "sdk.signature", "sdk.targeting",
    "sdk.formats", "sdk.model", "sdk.validation", "sdk.summary",
)


@dataclass(frozen=True)
class Import:
    """One import statement of a module: the modules it names, where it stands."""

    names: tuple[str, ...]
    line: int
    deferred: bool  # inside a function (runs when the function is called)
    typing_only: bool  # under ``if TYPE_CHECKING:``


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["sdk", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> Iterator[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, deferred: bool, typing_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield Import(tuple(a.name for a in child.names), child.lineno, deferred, typing_only)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                named = tuple(f"{target}.{a.name}" for a in child.names)
                yield Import((target, *named), child.lineno, deferred, typing_only)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), deferred, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), deferred, typing_only)
            else:
                inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from visit(child, inner, typing_only)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False, False)


def _targets(module: str, imp: Import) -> set[str]:
    """The ``sdk`` modules an import runs: the named module and the packages above it that are not
    already above ``module`` (importing ``sdk.tuners.lora.config`` runs ``sdk/tuners/__init__.py`` too)."""
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    out = set()
    for name in imp.names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in MODULES and candidate not in own:
                out.add(candidate)
    return out


def _graph(*, deferred: bool) -> dict[str, dict[str, int]]:
    """module -> imported module -> line, for the imports that run (module level, or all with ``deferred``)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for module in MODULES:
        for imp in _imports(module):
            if imp.typing_only or (imp.deferred and not deferred):
                continue
            for target in _targets(module, imp):
                graph[module].setdefault(target, imp.line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                components.append(_cycle_in(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def _cycle_in(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """One cycle through the component, as ``a (line) -> b (line) -> … -> a`` steps for the message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w, line in sorted(graph[v].items()):
            step = f"{v}:{line} -> {w}"
            if w == start:
                return [*paths[v][:-1], step]
            if w in component and w not in paths:
                paths[w] = [*paths[v][:-1], step, w]
                queue.append(w)
    return sorted(component)


def _under(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def test_the_source_walk_sees_the_package() -> None:
    assert {"sdk", "sdk.methods", "sdk.layers", "sdk.tuners.lora.tuner"} <= set(MODULES)
    assert "sdk.layers" in _graph(deferred=False)["sdk.model"]


def test_no_import_cycle_at_module_level() -> None:
    cycles = _cycles(_graph(deferred=False))
    assert not cycles, "import cycles among sdk modules:\n" + "\n".join(" ; ".join(c) for c in cycles)


def test_no_import_cycle_through_registry_signature_tuners_or_core_even_inside_functions() -> None:
    cycles = [c for c in _cycles(_graph(deferred=True)) if any(_under(s.split(":")[0], LAYERED) for s in c)]
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(" ; ".join(c) for c in cycles)


def test_the_tuners_do_not_import_the_method_registry() -> None:
    graph = _graph(deferred=True)
    found = [f"{m}:{deps['sdk.methods']}" for m, deps in graph.items()
             if _under(m, ("sdk.tuners",)) and "sdk.methods" in deps]
    assert not found, f"sdk.methods lists the built-in methods; these tuner modules import it: {found}"


def test_method_agnostic_code_imports_no_method_package() -> None:
    graph = _graph(deferred=True)
    found = [f"{m}:{line} -> {t}" for m in graph if _under(m, METHOD_AGNOSTIC)
             for t, line in graph[m].items() if _under(t, ("sdk.tuners",))]
    assert not found, f"ask the method through sdk.methods instead: {found}"


def test_sdk_never_imports_registry_service() -> None:
    found = [
        f"{module}:{imp.line} {name}"
        for module in MODULES
        for imp in _imports(module)
        for name in imp.names
        if name == "registry_service" or name.startswith("registry_service.")
    ]
    assert not found, f"sdk must not import registry_service: {found}"
