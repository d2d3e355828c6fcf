"""What each UI page shows, as plain data built from the registry, the push state and the recorded results.

Nothing here renders HTML or talks to Redis: the app reads the push state and passes it in,
so the pages are computed the same way in tests, the benchmark and the server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from featsync.monitoring.freshness import OnlineFreshness, format_age, online_freshness, parse_instant
from featsync.project import Project
from featsync.registry import FeatureService, FeatureView, Registry, format_duration
from featsync.registry.catalog import describe_feature_view, describe_service
from featsync.results import ResultCache, validation_failures
from featsync.ui.lineage import lineage_graph, render_svg

# -- the catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogRow:
    """One feature view or service in the catalog, with the text its search matches."""

    kind: str  # feature_view | feature_service
    name: str
    key: str  # the page's name: view name or exposure name
    version: int
    description: str
    entities: tuple[str, ...]
    tags: tuple[str, ...]  # "tag" or "tag=value"
    tag_keys: tuple[str, ...]
    owner: str
    online: bool | None  # None for services
    features: int
    ttl: str = ""
    search: str = ""  # lower-case words: name, description, entities, tags, owner, features and their descriptions

    def matches(self, words: Iterable[str], entity: str = "", tag: str = "", owner: str = "", online: str = "") -> bool:
        """The catalog's filter (the page's script applies the same rules to the same data-* fields)."""
        if any(w not in self.search for w in words):
            return False
        if entity and entity not in self.entities:
            return False
        if tag and tag not in self.tag_keys:
            return False
        if owner and owner != self.owner:
            return False
        if online and (self.online is None or self.online != (online == "yes")):
            return False
        return True


def search_words(query: str) -> list[str]:
    return query.lower().split()


def search_text(texts: Iterable[str]) -> str:
    """The distinct lower-case words of the texts: what a query's words are looked for in
    (as substrings). Each word once keeps the catalog page small for hundreds of views."""
    return " ".join(dict.fromkeys(" ".join(texts).lower().split()))


def catalog_rows(registry: Registry) -> list[CatalogRow]:
    rows = []
    for view in registry.feature_views.values():
        tags = tuple(f"{k}={v}" if v else k for k, v in view.tags.items())
        words = [view.name, view.description, *view.entities, *tags, view.owner or ""]
        words += [text for c in view.features for text in (c.name, c.description)]
        rows.append(
            CatalogRow(
                "feature_view",
                view.name,
                view.name,
                view.version,
                view.description,
                view.entities,
                tags,
                tuple(view.tags),
                view.owner or "",
                view.online,
                len(view.features),
                format_duration(view.ttl_seconds),
                search_text(words),
            )
        )
    for service in registry.services.values():
        entities = tuple(dict.fromkeys(e for v in service.feature_views for e in registry.feature_view(v).entities))
        words = [service.name, service.exposure, service.description, service.owner or "", *map(str, service.features)]
        words += [registry.feature_view(r.feature_view).column(r.feature).description for r in service.features]
        words += [text for f in service.on_demand for text in (f.name, f.description)]
        rows.append(
            CatalogRow(
                "feature_service",
                service.name,
                service.exposure,
                service.version,
                service.description,
                entities,
                (),
                (),
                service.owner or "",
                None,
                len(service.features) + len(service.on_demand),
                search=search_text(words),
            )
        )
    return rows


def catalog_index(rows: list[CatalogRow]) -> str:
    """Every catalog row as compact JSON for the page's script, safe inside a <script> element.

    The page lists only the first rows of each kind (a table of 500 rows is what made it slow
    to load); the script filters this index instead of hidden rows and lists the matches. Each
    entry: [kind, key, name, version, entities, online, ttl, tags, tag keys, owner, features,
    description, search words]. `<` is escaped so no text can close the script element.
    """
    entries = [
        [r.kind, r.key, r.name, r.version, r.entities, r.online, r.ttl, r.tags, r.tag_keys, r.owner, r.features, r.description,
         r.search]
        for r in rows
    ]  # fmt: skip
    return json.dumps(entries, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


@dataclass(frozen=True)
class Facets:
    entities: list[str]
    tags: list[str]
    owners: list[str]


def facets(rows: list[CatalogRow]) -> Facets:
    return Facets(
        sorted({e for r in rows for e in r.entities}),
        sorted({t for r in rows for t in r.tag_keys}),
        sorted({r.owner for r in rows if r.owner}),
    )


# -- dbt artifacts: compiled SQL --------------------------------------------------------------


@dataclass
class CompiledSQL:
    """Compiled SQL of models, from the manifest the last `dbt build`/`compile` wrote.

    featsync's own manifest comes from `dbt parse`, which compiles nothing; dbt's run
    artifacts (target-path, DBT_TARGET_PATH) hold compiled_code. A node's code is shown only
    when its checksum equals the one in featsync's manifest: SQL compiled from an older
    version of the model is not shown as if it were current.
    """

    path: Path
    _stamp: tuple[int, int] | None = None
    _nodes: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, project: Project) -> CompiledSQL:
        folder = os.environ.get("DBT_TARGET_PATH") or project.config.get("target-path") or "target"
        return cls(project.project_dir / folder / "manifest.json")

    def get(self, node: Mapping[str, Any]) -> str | None:
        self._refresh()
        found = self._nodes.get(node.get("unique_id", ""))
        if found is None or found[0] != (node.get("checksum") or {}).get("checksum"):
            return None
        return found[1]

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            self._nodes, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            manifest = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._nodes, self._stamp = {}, stamp
            return
        self._nodes = {
            uid: ((node.get("checksum") or {}).get("checksum"), node["compiled_code"])
            for uid, node in manifest.get("nodes", {}).items()
            if node.get("compiled_code")
        }
        self._stamp = stamp


# -- validation, skew: summaries of recorded results -------------------------------------------


def validation_summary(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    total = len(result.get("results", []))
    return {
        "status": result.get("status"),
        "failures": validation_failures(result),
        "expectations": total,
        "recorded_at": result.get("recorded_at"),
    }


def skew_summary(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    checks = result.get("checks", [])
    checked = sum(c.get("checked", 0) for c in checks)
    mismatches = sum(c.get("mismatches", 0) for c in checks)
    return {
        "sampled": result.get("sampled", 0),
        "missing_online": result.get("missing_online", 0),
        "mismatches": mismatches,
        "checked": checked,
        "rate": mismatches / checked if checked else 0.0,
        "breaches": result.get("breaches", []),
        "recorded_at": result.get("recorded_at"),
    }


# -- the feature view and service pages --------------------------------------------------------


@dataclass
class Snippets:
    online: str
    training: str
    http: str


def snippets(registry: Registry, view: FeatureView, project: Project) -> Snippets:
    """Copy-paste examples for this view: Python online read, dbt training set, HTTP."""
    refs = [f"{view.name}:{f}" for f in view.feature_names]
    example = {e: _example_key(view.column(e).data_type, e) for e in view.entities}
    row = ", ".join(f"{json.dumps(k)}: {v}" for k, v in example.items())
    target = f", target={json.dumps(project.target)}" if project.target else ""
    feature_lines = "".join(f"        {json.dumps(r)},\n" for r in refs)
    online = (
        "from featsync import FeatureStore\n\n"
        f'store = FeatureStore(project_dir="."{target})\n'
        "response = store.get_online_features(\n"
        f"    entity_rows=[{{{row}}}],\n"
        "    features=[\n"
        f"{feature_lines}"
        "    ],\n"
        ")\n"
        "print(response.to_dict())\n"
    )
    spine_keys = ", ".join(view.entities)
    feature_list = ",\n".join(f"        '{r}'" for r in refs)
    training = (
        f"-- models/training/{view.name}_training_set.sql: one row per spine row, features as of its event_timestamp\n"
        "{{ featsync.point_in_time_join(\n"
        f"    spine=ref('my_labels'),  -- columns: {spine_keys}, event_timestamp, your labels\n"
        "    features=[\n"
        f"{feature_list}\n"
        "    ],\n"
        "    spine_timestamp='event_timestamp',\n"
        ") }}\n"
    )
    body = json.dumps({"features": refs, "entities": {k: [json.loads(v)] for k, v in example.items()}})
    http = f"curl -s http://127.0.0.1:6566/get-online-features \\\n  -H 'Content-Type: application/json' \\\n  -d '{body}'\n"
    return Snippets(online, training, http)


def _example_key(data_type: str, name: str) -> str:
    kind = data_type.lower()
    if any(t in kind for t in ("int", "numeric", "decimal")):
        return "1"
    return json.dumps(f"<{name}>")


def feature_view_page(
    project: Project,
    registry: Registry,
    view: FeatureView,
    state: Mapping[str, str] | None,
    now: datetime,
    results: ResultCache,
    compiled: CompiledSQL,
    link: Any,
) -> dict[str, Any]:
    """Everything the feature view page shows; `state` is its push state (None: Redis unreachable)."""
    facts = describe_feature_view(registry, view)
    node = registry.manifest.get("nodes", {}).get(view.unique_id, {})
    graph = lineage_graph(registry.manifest, view.unique_id, link, {v.unique_id for v in registry.feature_views.values()})
    freshness = online_freshness(view, state, now) if view.online and state is not None else None
    validation = results.current("validate", view)
    drift = results.current("drift", view)
    return {
        "view": view,
        "facts": facts,
        "thresholds": view.monitoring,
        "raw_sql": node.get("raw_code") or "",
        "sql_file": node.get("original_file_path") or "",
        "compiled_sql": compiled.get(node),
        "compiled_from": _shown_path(compiled.path, project),
        "yaml_file": view.file,
        "yaml": _project_file(project, view.file, view.package, registry.project_name),
        "graph": graph,
        "svg": render_svg(graph, f"Lineage of {view.name}: {len(graph.upstream)} upstream, {len(graph.downstream)} downstream"),
        "state": state,
        "freshness": freshness,
        "ages": _ages(freshness),
        "validation": validation,
        "validation_summary": validation_summary(validation),
        "drift": drift,
        "status": results.current("status", view),
        "skew": skew_summary(results.current("verify", view)),
        "snippets": snippets(registry, view, project),
        "services": [registry.services[s] for s in facts["used_by"]["services"]],
    }


def _shown_path(path: Path, project: Project) -> str:
    return str(path.relative_to(project.project_dir)) if path.is_relative_to(project.project_dir) else str(path)


def _ages(freshness: OnlineFreshness | None) -> dict[str, str]:
    if freshness is None:
        return {}
    return {
        name: format_age(value)
        for name, value in (("event", freshness.age_seconds), ("push", freshness.push_age_seconds))
        if value is not None
    }


def _project_file(project: Project, relative: str, package: str, project_name: str) -> str | None:
    """A declaration file's text, only from inside the project (or its local package folder)."""
    bases = [project.project_dir] if package in ("", project_name) else [project.project_dir / "dbt_packages" / package]
    for base in bases:
        path = (base / relative).resolve()
        if path.is_relative_to(base.resolve()) and path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
    return None


def service_page(registry: Registry, service: FeatureService) -> dict[str, Any]:
    exposure = registry.manifest.get("exposures", {}).get(service.unique_id, {})
    owner = exposure.get("owner") or {}
    by_view: dict[str, list[dict[str, str]]] = {}
    for ref in service.features:
        column = registry.feature_view(ref.feature_view).column(ref.feature)
        by_view.setdefault(ref.feature_view, []).append(
            {"name": ref.feature, "data_type": column.data_type, "description": column.description}
        )
    versions = sorted((s for s in registry.services.values() if s.name == service.name), key=lambda s: s.version)
    child_map = registry.manifest.get("child_map", {})
    used_by = [uid.split(".")[-1] for uid in child_map.get(service.unique_id, [])]
    return {
        "service": service,
        "facts": describe_service(service),
        "by_view": by_view,
        "versions": versions,
        "exposure": {
            "name": exposure.get("name", service.exposure),
            "label": exposure.get("label"),
            "type": exposure.get("type"),
            "maturity": exposure.get("maturity"),
            "url": exposure.get("url"),
            "link": exposure.get("url") if web_link(exposure.get("url")) else None,
            "owner_name": owner.get("name"),
            "owner_email": owner.get("email"),
            "description": exposure.get("description"),
        },
        "training_sets": _training_sets(registry, service),
        "used_by": used_by,
    }


def _training_sets(registry: Registry, service: FeatureService) -> list[str]:
    """Models that build a training set of this service version (point_in_time_join with its name)."""
    names = {f"'{service.name}:v{service.version}'", f'"{service.name}:v{service.version}"', f"'{service.exposure}'"}
    found = []
    for node in registry.manifest.get("nodes", {}).values():
        if node.get("resource_type") == "model" and "point_in_time_join" in (node.get("raw_code") or ""):
            if any(n in node["raw_code"] for n in names):
                found.append(node["name"])
    return sorted(found)


# -- health ------------------------------------------------------------------------------------


@dataclass
class HealthRow:
    view: FeatureView
    freshness: OnlineFreshness | None  # None: the push state could not be read
    ages: dict[str, str]
    validation: dict[str, Any] | None
    skew: dict[str, Any] | None
    status: dict[str, Any] | None  # the last `featsync status` of the view

    @cached_property
    def verdict(self) -> str:
        if self.freshness is None:
            return "unknown"
        return "stale" if self.freshness.stale else "fresh"


def health_rows(
    registry: Registry, states: Mapping[str, Mapping[str, str]] | None, now: datetime, results: ResultCache
) -> list[HealthRow]:
    rows = []
    for view in registry.online_views():
        freshness = online_freshness(view, states[view.name], now) if states is not None else None
        rows.append(
            HealthRow(
                view,
                freshness,
                _ages(freshness),
                validation_summary(results.current("validate", view)),
                skew_summary(results.current("verify", view)),
                results.current("status", view),
            )
        )
    return rows


def when(text: str | datetime | None) -> str:
    """A recorded time (ISO text or datetime) for people: '2024-04-30 12:00Z'."""
    value = text if isinstance(text, datetime) else parse_instant(text)
    return value.strftime("%Y-%m-%d %H:%MZ") if value else "-"


def web_link(url: Any) -> bool:
    """Whether an exposure's `url` may become a link: http(s) only. Any other scheme
    (`javascript:alert(document.cookie)`, `data:`) would run or load in the UI's origin when
    clicked, so the page shows it as text. The scheme must start the value: a browser drops
    leading spaces and control characters, which would hide one."""
    return isinstance(url, str) and url[:8].lower().startswith(("http://", "https://"))
