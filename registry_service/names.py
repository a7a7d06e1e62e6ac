"""Names and references: ``ns/name``, ``ns/name@ref`` and what a ref may be.

The grammar itself lives in :mod:`sdk.names` (the client checks the same rules); this module turns
a broken name into a 400 and adds the service's own rule, the reserved namespaces.
"""

from __future__ import annotations

from sdk.names import ALIAS_PATTERN, COMMIT, NAME_PART_PATTERN, alias_problem, part_problem

from .errors import BadRequest

__all__ = ["ALIAS_PATTERN", "COMMIT", "PART_PATTERN", "RESERVED_NAMESPACES", "check_alias", "check_part",
           "split_name"]

#: The character rules of names and aliases as JSON Schema patterns (for the OpenAPI document).
PART_PATTERN = NAME_PART_PATTERN

#: First path segments the service's own routes use; a namespace of that name could not be reached
#: through the Hub-compatible ``/{namespace}/{name}/resolve/...`` routes or the web pages.
RESERVED_NAMESPACES = frozenset({"api", "adapters", "base-models", "compositions", "jobs", "merge-jobs", "sign-in",
                                 "sign-out", "static", "schema", "health", "docs", "livez", "readyz", "metrics"})


def check_part(value: str, what: str) -> str:
    """A namespace or name: letters, digits, '_', '.', '-', starting with a letter or digit."""
    problem = part_problem(value, what)
    if problem:
        raise BadRequest(problem)
    if what == "namespace" and value.lower() in RESERVED_NAMESPACES:
        raise BadRequest(f"namespace {value!r} is reserved (the registry's own pages and API use that path); "
                         "pick another namespace")
    return value


def split_name(full: str, what: str = "name") -> tuple[str, str]:
    """``ns/name`` -> (ns, name), validated."""
    ns, sep, name = full.partition("/")
    if not sep:
        raise BadRequest(f"{what} must look like 'namespace/name', got {full!r}")
    return check_part(ns, "namespace"), check_part(name, what)


def check_alias(value: str) -> str:
    """An alias: starts with a letter (so it is never a version number or a commit)."""
    problem = alias_problem(value)
    if problem:
        raise BadRequest(problem)
    return value
