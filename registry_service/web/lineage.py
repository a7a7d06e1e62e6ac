"""The lineage of an adapter version drawn as SVG: columns by generation, edges as curves
(coordinates computed here, drawn by ``_lineage.svg.html``; the graph comes from
:func:`registry_service.domain.merge_jobs.lineage.lineage_of`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.merge_jobs.lineage import Lineage, Node

#: Boxes fit a label of LABEL_CHARS characters in the 12 px monospace font (about 7.3 px a character);
#: the gap between columns fits an edge label such as "dare_ties · weight 0.35".
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 250, 40, 150, 18, 8
LABEL_CHARS = 31


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
