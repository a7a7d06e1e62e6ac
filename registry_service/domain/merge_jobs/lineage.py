"""Lineage of adapter versions: which versions a merged version was made from, as a small graph
(the API answers it as JSON, the web UI draws it).

:func:`lineage_of` reads ``adapter_version.parents`` (a JSON list a merge job writes, one entry per
input: ``{"adapter": "ns/name", "version": 3, "commit": "<40 hex>", "weight": 0.5, ...}``; a plain
``"ns/name@3"`` string works too) and follows parents of parents. A version pushed directly has no
parents: the graph is its own node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ...db.models import Adapter, AdapterVersion
from ...names import COMMIT
from ..adapters.redaction import inputs_view, redact_parents
from ..auth.tokens import Principal

MAX_NODES = 40
_EDGE_KEYS = ("weight", "density")  # parameters of an input worth printing on its edge


@dataclass(frozen=True)
class Node:
    """One version in the graph; ``href`` is None when the viewer may not open it."""

    key: str
    label: str
    href: str | None
    current: bool = False
    note: str = ""


@dataclass(frozen=True)
class Edge:
    """``parent`` went into ``child``; ``label`` shows the input's parameters (weight…)."""

    parent: str
    child: str
    label: str = ""


@dataclass
class Lineage:
    """The versions a version descends from (itself included) and how they connect."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    @property
    def has_parents(self) -> bool:
        return bool(self.edges)


def _version_href(ns: str, name: str, version: int) -> str:
    return f"/adapters/{ns}/{name}/versions/{version}"


def _parse_entry(entry: Any) -> tuple[str | None, str | None, str]:
    """(``ns/name`` or None, version number/commit as text or None, edge label) of a parents entry."""
    if isinstance(entry, str):
        name, _, ref = entry.partition("@")
        return name or None, ref or None, ""
    if not isinstance(entry, Mapping):
        return None, None, ""
    name = entry.get("adapter") or entry.get("name")
    ref = entry.get("commit") or entry.get("version")
    method = [str(entry["combination_type"])] if entry.get("combination_type") else []
    label = " · ".join(method + [f"{k} {entry[k]}" for k in _EDGE_KEYS if entry.get(k) is not None])
    return (str(name) if name else None), (str(ref) if ref is not None else None), label


async def _find(db: AsyncSession, name: str | None, ref: str | None) -> tuple[Adapter, AdapterVersion] | None:
    """The version a parents entry names, by commit or by ``ns/name`` + number."""
    stmt = select(Adapter, AdapterVersion).join(AdapterVersion, AdapterVersion.adapter_id == Adapter.id)
    if ref and COMMIT.match(ref):
        stmt = stmt.where(AdapterVersion.commit == ref)
    elif name and "/" in name and ref and ref.isdigit():
        ns, _, short = name.partition("/")
        stmt = stmt.where(Adapter.namespace == ns, Adapter.name == short, AdapterVersion.version == int(ref))
    else:
        return None
    row = (await db.execute(stmt)).unique().first()
    return (row[0], row[1]) if row else None


def _readable(viewer: Principal, adapter: Adapter) -> bool:
    return adapter.visibility == "public" or viewer.can_read(adapter.namespace)


async def lineage_of(db: AsyncSession, viewer: Principal, adapter: Adapter, version: AdapterVersion) -> Lineage:
    """``version`` and its ancestors (up to :data:`MAX_NODES`), private ones the viewer cannot read
    shown without name or link."""
    out = Lineage()
    root = f"{adapter.namespace}/{adapter.name}@{version.version}"
    out.nodes[version.commit] = Node(version.commit, root, None, current=True)
    todo: list[AdapterVersion] = [version]
    while todo:
        child = todo.pop(0)
        for i, entry in enumerate(child.parents or []):
            name, ref, label = _parse_entry(entry)
            found = await _find(db, name, ref)
            if found is None:  # gone (it may have been private): named by nothing it had
                key = f"{child.commit}:missing:{i}"
                node = Node(key, "a version no longer here", None, note="not in this registry")
            elif not _readable(viewer, found[0]):  # neither its name nor its commit
                key = f"{child.commit}:hidden:{i}"
                node = Node(key, "private version", None, note="sign in to see it")
            else:
                a, v = found
                key = v.commit
                node = Node(key, f"{a.namespace}/{a.name}@{v.version}", _version_href(a.namespace, a.name, v.version))
                if key not in out.nodes and len(out.nodes) < MAX_NODES:
                    todo.append(v)
            if key not in out.nodes:
                if len(out.nodes) >= MAX_NODES:
                    continue
                out.nodes[key] = node
            out.edges.append(Edge(key, child.commit, label))
    return out


async def describe_lineage(db: AsyncSession, graph: Lineage, full_name: str, version: AdapterVersion,
                           viewer: Principal) -> dict[str, Any]:
    """The JSON form of ``graph``, the lineage of ``version`` of adapter ``full_name`` (``ns/name``):
    ``nodes`` (readable versions with their adapter, number, commit and URLs) and ``edges`` (parent ->
    child, with the input's weight and parameters); ``parents`` redacted for ``viewer``."""
    nodes = []
    for key, node in graph.nodes.items():
        item: dict[str, Any] = {"id": key, "label": node.label, "current": node.current, "note": node.note or None}
        if node.href:  # a readable version: say which, and where its API lives
            full, _, number = node.label.rpartition("@")
            item.update(adapter=full, version=int(number), commit=key,
                        url=f"/api/v1/adapters/{full}/versions/{number}", page=node.href)
        nodes.append(item)
    if version.commit in graph.nodes:
        nodes[0].update(adapter=full_name, version=version.version, commit=version.commit,
                        url=f"/api/v1/adapters/{full_name}/versions/{version.version}")
    entries: dict[str, list[dict[str, Any]]] = {version.commit: list(version.parents or [])}
    for child in {e.child for e in graph.edges} - set(entries):
        row = (await db.execute(select(AdapterVersion.parents).where(AdapterVersion.commit == child))).first()
        entries[child] = list(row[0] or []) if row else []
    edges = []
    for e in graph.edges:
        entry = next((p for p in entries.get(e.child, []) if isinstance(p, dict) and p.get("commit") == e.parent),
                     {})
        extra = {k: entry[k] for k in ("weight", "combination_type", "density", "job") if k in entry}
        edges.append({"parent": e.parent, "child": e.child, "label": e.label, **extra})
    view = await inputs_view(db, viewer, [version])
    return {"root": version.commit, "nodes": nodes, "edges": edges,
            "parents": redact_parents(version.parents or [], view)}


__all__ = ["MAX_NODES", "Edge", "Lineage", "Node", "describe_lineage", "lineage_of"]
