"""Selecting feature views with dbt's node selection syntax, resolved against the manifest.

Every command that works on a set of feature views takes selectors in the grammar of
``dbt ls --select``, restricted to what selects models. It is resolved here, in Python,
over the manifest featsync already holds (running dbt for a selection would cost seconds):

- ``NAME``: the node named NAME (a feature view, or any model, seed, snapshot or exposure,
  useful with the graph operators); shell wildcards (``*``, ``?``, ``[...]``) match several.
- ``tag:TAG``: nodes whose dbt tags include TAG (wildcards allowed).
- ``path:PATH``: nodes whose file is PATH or lies under it (relative to the project).
- ``exposure:NAME``: the exposure; ``+exposure:NAME`` selects the models it depends on.
- ``service:NAME``: the feature views of a feature service (``NAME``, ``NAME:vN`` or its
  exposure name): featsync's own method, not dbt's.
- ``+X`` / ``X+``: X and all its ancestors / descendants; ``2+X`` / ``X+1``: up to that many
  generations.
- ``A,B``: the intersection; ``"A B"`` (or the option repeated): the union.

The result is the feature views among the selected nodes, in name order. Anything else
(``@``, ``config:``, ``source:``, ...) is refused naming what is supported, never ignored.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from featsync.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from featsync.registry.declarations import FeatureView, Registry

METHODS = ("tag", "path", "exposure", "service")
_ATOM = re.compile(r"^(?:(?P<up>\d*)\+)?(?P<body>[^+]+?)(?:\+(?P<down>\d*))?$")
_WILDCARD = re.compile(r"[*?\[]")


class SelectionError(UsageError):
    """A selector that is not in the supported grammar."""


def parse_selectors(selectors: Iterable[str]) -> list[list[str]]:
    """The union (spaces, repeated options) of intersections (commas) of atoms.

    An empty (or blank) selector is refused: it would otherwise add nothing to the union,
    and a union of nothing selects every view, the opposite of what was typed."""
    selectors = list(selectors)
    if any(not selector.strip() for selector in selectors):
        raise SelectionError("empty selector: name the feature views to pick, or give no selector to pick all")
    return [token.split(",") for selector in selectors for token in selector.split()]


def is_plain_name(selector: str) -> bool:
    """A bare name without wildcards, method or graph operator: the name of one feature view."""
    return bool(selector) and not any(c in selector for c in "+,:@ ") and not _WILDCARD.search(selector)


def select(registry: Registry, selectors: Iterable[str]) -> list[FeatureView]:
    """The feature views the selectors pick (every view when there are none)."""
    union = parse_selectors(selectors)
    if not union:
        return list(registry.feature_views.values())
    by_id = {view.unique_id: view for view in registry.feature_views.values()}
    chosen: set[str] = set()
    for intersection in union:
        ids: set[str] | None = None
        for atom in intersection:
            if is_plain_name(atom):  # the common case, with the registry's own "unknown" message
                matched = {registry.feature_view(atom).unique_id}
            else:
                matched = _resolve(registry, atom)
            ids = matched if ids is None else ids & matched
        chosen |= ids or set()
    views = sorted((by_id[uid] for uid in chosen if uid in by_id), key=lambda v: v.name)
    if not views:
        raise NotFoundError(f"selection '{' '.join(' '.join(','.join(i) for i in union).split())}' matches no feature view")
    return views


def _resolve(registry: Registry, atom: str) -> set[str]:
    match = _ATOM.match(atom)
    if not match or "@" in atom:
        raise SelectionError(_unsupported(atom))
    body = match.group("body")
    method, sep, value = body.partition(":")
    if not sep:
        method, value = "name", body
    elif method not in METHODS:
        raise SelectionError(_unsupported(atom))
    manifest = registry.manifest
    seeds = _seeds(registry, manifest, method, value)
    if not seeds:
        raise NotFoundError(f"selector '{atom}' matches nothing in the project")
    result = set(seeds)
    if match.group("up") is not None:
        result |= _walk(manifest.get("parent_map", {}), seeds, _depth(match.group("up")))
    if match.group("down") is not None:
        result |= _walk(manifest.get("child_map", {}), seeds, _depth(match.group("down")))
    return result


def _seeds(registry: Registry, manifest: Mapping[str, Any], method: str, value: str) -> set[str]:
    if method == "service":
        return {registry.feature_view(name).unique_id for name in registry.service(value).feature_views}
    nodes = {**manifest.get("nodes", {}), **manifest.get("exposures", {})}
    if method == "exposure":
        return {uid for uid, n in manifest.get("exposures", {}).items() if fnmatch.fnmatchcase(n.get("name", ""), value)}
    if method == "tag":
        return {uid for uid, n in nodes.items() if any(fnmatch.fnmatchcase(t, value) for t in n.get("tags") or ())}
    if method == "path":
        prefix = value.rstrip("/")
        return {
            uid
            for uid, n in nodes.items()
            if (path := n.get("original_file_path") or "") == prefix
            or path.startswith(prefix + "/")
            or fnmatch.fnmatchcase(path, prefix)
        }
    return {uid for uid, n in nodes.items() if n.get("resource_type") != "test" and fnmatch.fnmatchcase(n.get("name", ""), value)}


def _depth(text: str) -> int | None:
    return int(text) if text else None


def _walk(edges: Mapping[str, list[str]], seeds: set[str], depth: int | None) -> set[str]:
    seen: set[str] = set()
    frontier, generation = set(seeds), 0
    while frontier and (depth is None or generation < depth):
        frontier = {nxt for uid in frontier for nxt in edges.get(uid, ()) if nxt not in seen and nxt not in seeds}
        seen |= frontier
        generation += 1
    return seen


def _unsupported(atom: str) -> str:
    return (
        f"selector '{atom}' is not supported (supported: NAME with * wildcards, "
        + ", ".join(f"{m}:..." for m in METHODS)
        + ", +X, X+, N+X, X+N, A,B intersections and space-separated unions)"
    )
