"""Lineage of adapter versions: which versions a merged version was made from, as a small graph,
and its layout as an SVG drawing (coordinates computed here, drawn by ``_lineage.svg.html``).

:func:`lineage_of` is the seam the merge jobs plug into: it reads ``adapter_version.parents``
(a JSON list the merge job writes, one entry per input: ``{"adapter": "ns/name", "version": 3,
"commit": "<40 hex>", "weight": 0.5, ...}``; a plain ``"ns/name@3"`` string works too) and
follows parents of parents. A version pushed directly has no parents: the graph is its own node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.models import Adapter, AdapterVersion
from ..domain.auth.tokens import Principal
from ..names import COMMIT

MAX_NODES = 40
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 210, 40, 110, 18, 8
LABEL_CHARS = 30
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
    label = ", ".join(f"{k} {entry[k]}" for k in _EDGE_KEYS if entry.get(k) is not None)
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
            if found is None:
                key = f"{child.commit}:missing:{i}"
                node = Node(key, f"{name or '?'}@{ref or '?'}", None, note="not in this registry")
            elif not _readable(viewer, found[0]):
                key = found[1].commit
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


@dataclass(frozen=True)
class PlacedNode:
    """A node with its box."""

    node: Node
    x: int
    y: int
    text: str


@dataclass(frozen=True)
class PlacedEdge:
    """An edge as an SVG path, with where its label starts (left end of the text baseline)."""

    path: str
    label: str
    label_x: int
    label_y: int


@dataclass(frozen=True)
class Drawing:
    """Everything the SVG template needs."""

    width: int
    height: int
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    node_w: int = NODE_W
    node_h: int = NODE_H


def _generations(lineage: Lineage) -> dict[str, int]:
    """Distance of every node from the current version, along the longest path (parents go left)."""
    current = next(k for k, n in lineage.nodes.items() if n.current)
    depth = {current: 0}
    for _ in range(len(lineage.nodes)):  # relax; the graph is acyclic and small
        changed = False
        for e in lineage.edges:
            if e.child in depth and depth.get(e.parent, -1) < depth[e.child] + 1:
                depth[e.parent] = depth[e.child] + 1
                changed = True
        if not changed:
            break
    return depth


def layout(lineage: Lineage) -> Drawing:
    """Columns by generation (oldest on the left, the current version on the right), edges as curves."""
    depth = _generations(lineage)
    deepest = max(depth.values())
    columns: dict[int, list[str]] = {}
    for key in lineage.nodes:
        columns.setdefault(depth.get(key, deepest), []).append(key)
    tallest = max(len(keys) for keys in columns.values())
    height = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * MARGIN
    placed: dict[str, PlacedNode] = {}
    for d, keys in columns.items():
        x = MARGIN + (deepest - d) * (NODE_W + GAP_X)
        top = (height - (len(keys) * NODE_H + (len(keys) - 1) * GAP_Y)) // 2
        for i, key in enumerate(keys):
            node = lineage.nodes[key]
            text = node.label if len(node.label) <= LABEL_CHARS else node.label[: LABEL_CHARS - 1] + "…"
            placed[key] = PlacedNode(node, x, top + i * (NODE_H + GAP_Y), text)
    edges = []
    for e in lineage.edges:
        a, b = placed.get(e.parent), placed.get(e.child)
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
        x2, y2 = b.x - 6, b.y + NODE_H // 2
        bend = max((x2 - x1) // 2, 20)
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        # the label sits just right of the parent, above its edge: there the edges of different parents
        # are still apart (they converge on the child), so no edge crosses another's label
        edges.append(PlacedEdge(path, e.label, x1 + 6, y1 - 5))
    width = 2 * MARGIN + (deepest + 1) * NODE_W + deepest * GAP_X
    return Drawing(width, height, list(placed.values()), edges)
