"""A feature view's lineage as a graph, drawn server-side as inline SVG (no JavaScript library).

Nodes are the view, everything it is built from (models, snapshots, seeds, sources: the
manifest's parent_map, transitively) and everything built on it (models such as training
sets, and exposures such as feature services: child_map, transitively). Columns are signed
distances from the view (longest path, so every edge points right); within a column nodes
are ordered by the mean row of their neighbours in the previous column (one barycentre
pass), which keeps edges from crossing in the common shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

KINDS = ("source", "seed", "snapshot", "model", "exposure")
NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 200, 30, 56, 12, 8
MAX_LABEL = 27  # characters shown in a box; the full name is in its tooltip and the list below the graph


@dataclass
class Node:
    unique_id: str
    name: str
    kind: str  # source | seed | snapshot | model | exposure | feature_view (the page's own)
    column: int
    href: str | None = None
    row: int = 0
    feature_view: bool = False  # a model that is itself a feature view

    @property
    def label(self) -> str:
        return self.name if len(self.name) <= MAX_LABEL else self.name[: MAX_LABEL - 1] + "…"


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    upstream: list[Node] = field(default_factory=list)
    downstream: list[Node] = field(default_factory=list)


def lineage_graph(
    manifest: Mapping[str, Any], unique_id: str, link: Callable[[str, str], str | None], feature_views: set[str]
) -> Graph:
    """The view's graph: `link(kind, name)` gives a node's page (or None); `feature_views`
    are the unique ids of models that are feature views (drawn as such)."""
    parents = manifest.get("parent_map", {})
    children = manifest.get("child_map", {})
    up = _distances(unique_id, parents)
    down = _distances(unique_id, children)
    nodes: dict[str, Node] = {}
    for uid, distance in [*up.items(), *down.items()]:
        kind = uid.split(".", 1)[0]
        if kind not in KINDS:
            continue  # tests, metrics, semantic models: not lineage a data scientist follows
        column = -distance if uid in up else distance
        name = _name(manifest, uid)
        nodes[uid] = Node(uid, name, kind, column, link("feature_view" if uid in feature_views else kind, uid))
        nodes[uid].feature_view = uid in feature_views
    own = unique_id.split(".")[-1]
    nodes[unique_id] = Node(unique_id, own, "feature_view", 0, None, feature_view=True)
    edges = [(p, uid) for uid in nodes for p in parents.get(uid, []) if p in nodes]
    _order(nodes, edges)
    graph = Graph(nodes, sorted(set(edges)))
    graph.upstream = sorted((n for n in nodes.values() if n.column < 0), key=lambda n: (n.column, n.name))
    graph.downstream = sorted((n for n in nodes.values() if n.column > 0), key=lambda n: (n.column, n.name))
    return graph


def _distances(start: str, adjacency: Mapping[str, list[str]]) -> dict[str, int]:
    """Longest-path distance of every node reachable from start (the DAG has no cycles)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(uid: str) -> None:  # iterative DFS post-order: deep projects must not hit the recursion limit
        stack = [(uid, iter(adjacency.get(uid, [])))]
        seen.add(uid)
        while stack:
            node, it = stack[-1]
            nxt = next((n for n in it if n not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(adjacency.get(nxt, []))))

    visit(start)
    distance = {start: 0}
    for uid in reversed(order):  # topological order from start
        for nxt in adjacency.get(uid, []):
            if uid in distance:
                distance[nxt] = max(distance.get(nxt, 0), distance[uid] + 1)
    distance.pop(start)
    return distance


def _name(manifest: Mapping[str, Any], uid: str) -> str:
    if uid.startswith("source."):
        source = manifest.get("sources", {}).get(uid, {})
        if source:
            return f"{source.get('source_name')}.{source.get('name')}"
    elif uid.startswith("exposure."):
        return uid.split(".")[-1]
    return uid.split(".")[-1]


def _order(nodes: dict[str, Node], edges: list[tuple[str, str]]) -> None:
    """Rows within each column: by name first, then one barycentre sweep outwards from the view."""
    columns: dict[int, list[Node]] = {}
    for node in nodes.values():
        columns.setdefault(node.column, []).append(node)
    for members in columns.values():
        members.sort(key=lambda n: (KINDS.index(n.kind) if n.kind in KINDS else -1, n.name))
        for i, node in enumerate(members):
            node.row = i
    neighbours: dict[str, list[str]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    for sweep in (sorted(c for c in columns if c < 0), sorted(c for c in columns if c > 0)):
        ordered = sweep[::-1] if sweep and sweep[0] < 0 else sweep  # from the view outwards
        for column in ordered:
            inner = column + 1 if column < 0 else column - 1

            def centre(node: Node, inner: int = inner) -> float:
                rows = [nodes[n].row for n in neighbours.get(node.unique_id, []) if nodes[n].column == inner]
                return sum(rows) / len(rows) if rows else float(node.row)

            members = sorted(columns[column], key=lambda n: (centre(n), n.row))
            for i, node in enumerate(members):
                node.row = i


def render_svg(graph: Graph, title: str) -> str:
    """The graph as an accessible inline SVG: a title, links that take the keyboard focus."""
    if not graph.nodes:
        return ""
    low = min(n.column for n in graph.nodes.values())
    high = max(n.column for n in graph.nodes.values())
    rows = max(n.row for n in graph.nodes.values()) + 1
    width = (high - low + 1) * (NODE_W + COL_GAP) - COL_GAP + 2 * PAD
    height = rows * (NODE_H + ROW_GAP) - ROW_GAP + 2 * PAD

    def x(node: Node) -> int:
        return PAD + (node.column - low) * (NODE_W + COL_GAP)

    def y(node: Node) -> int:
        return PAD + node.row * (NODE_H + ROW_GAP)

    paths = []
    for a, b in graph.edges:
        p, c = graph.nodes[a], graph.nodes[b]
        x1, y1, x2, y2 = x(p) + NODE_W, y(p) + NODE_H / 2, x(c), y(c) + NODE_H / 2
        mid = (x1 + x2) / 2
        paths.append(f'<path class="edge" d="M{x1},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2},{y2:.0f}"/>')
    boxes = []
    for node in sorted(graph.nodes.values(), key=lambda n: (n.column, n.row)):
        kind = "feature view" if node.feature_view and node.kind != "feature_view" else node.kind.replace("_", " ")
        css = "self" if node.kind == "feature_view" else ("feature-view" if node.feature_view else node.kind)
        box = (
            f'<rect x="{x(node)}" y="{y(node)}" width="{NODE_W}" height="{NODE_H}" rx="5"/>'
            f'<text x="{x(node) + 8}" y="{y(node) + NODE_H / 2 + 4:.0f}">{escape(node.label)}</text>'
        )
        tooltip = f"<title>{escape(node.name)} ({escape(kind)})</title>"
        data = f'data-kind="{escape(node.kind)}" data-name="{escape(node.name)}"'
        if node.href:
            boxes.append(
                f'<a class="node {css}" href="{escape(node.href)}" {data} aria-label="{escape(node.name)} ({escape(kind)})">'
                f"{tooltip}{box}</a>"
            )
        else:
            boxes.append(f'<g class="node {css}" {data}>{tooltip}{box}</g>')
    return (
        f'<svg class="lineage" role="img" aria-labelledby="lineage-title" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="lineage-title">{escape(title)}</title>{"".join(paths)}{"".join(boxes)}</svg>'
    )
