"""Names and references: ``ns/name``, ``ns/name@ref`` and what a ref may be."""

from __future__ import annotations

import re

from .errors import BadRequest

#: The character rules of names and aliases (also stated in the OpenAPI schema, see ``params``).
PART_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"
_PART = re.compile(PART_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)
COMMIT = re.compile(r"^[0-9a-f]{40}$")


#: First path segments the service's own routes use; a namespace of that name could not be reached
#: through the Hub-compatible ``/{namespace}/{name}/resolve/...`` routes or the web pages.
RESERVED_NAMESPACES = frozenset({"api", "adapters", "base-models", "jobs", "merge-jobs", "sign-in", "sign-out",
                                 "static", "schema", "health", "docs"})


def check_part(value: str, what: str) -> str:
    """A namespace or name: letters, digits, '_', '.', '-', starting with a letter or digit."""
    if not _PART.match(value) or ".." in value:
        raise BadRequest(f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (max 96), no '..'")
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
    if not _ALIAS.match(value) or COMMIT.match(value):
        raise BadRequest(f"invalid alias {value!r}: start with a letter; letters, digits, '_', '.', '-' (max 64)")
    return value
