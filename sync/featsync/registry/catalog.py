"""What `featsync list` and `featsync describe` report, as plain dicts.

The CLI renders these either as rich tables or as JSON, so both outputs always
carry the same facts.
"""

from __future__ import annotations

from typing import Any

from featsync.errors import NotFoundError
from featsync.registry import FeatureService, FeatureView, Registry, format_duration


def catalog(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """Every feature view, feature service and entity, one summary row each."""
    return {
        "feature_views": [
            {
                "name": v.name,
                "version": v.version,
                "entities": list(v.entities),
                "timestamp": v.timestamp,
                "ttl": format_duration(v.ttl_seconds),
                "online": v.online,
                "features": len(v.features),
                "owner": v.owner,
                "tags": dict(v.tags),
            }
            for v in registry.feature_views.values()
        ],
        "feature_services": [
            {
                "name": s.name,
                "version": s.version,
                "exposure": s.exposure,
                "features": len(s.features),
                "feature_views": list(s.feature_views),
                "owner": s.owner,
            }
            for s in registry.services.values()
        ],
        "entities": [
            {"name": e.name, "data_type": e.data_type, "feature_views": list(e.feature_views), "description": e.description}
            for e in registry.entities.values()
        ],
    }


def describe(registry: Registry, name: str) -> dict[str, Any]:
    """Full details of one feature view, feature service or entity, found by name."""
    if name in registry.feature_views:
        return describe_feature_view(registry, registry.feature_views[name])
    if name in registry.entities:
        entity = registry.entities[name]
        return {
            "kind": "entity",
            "name": entity.name,
            "data_type": entity.data_type,
            "description": entity.description,
            "feature_views": list(entity.feature_views),
        }
    try:
        return describe_service(registry.service(name))
    except NotFoundError:
        known = sorted({*registry.feature_views, *registry.entities, *(s.name for s in registry.services.values())})
        raise NotFoundError(f"no feature view, feature service or entity named '{name}' (known: {', '.join(known)})") from None


def describe_feature_view(registry: Registry, view: FeatureView) -> dict[str, Any]:
    upstream = registry.upstream(view.unique_id)
    used_by = registry.used_by(view.name)
    return {
        "kind": "feature_view",
        "name": view.name,
        "version": view.version,
        "description": view.description,
        "relation": view.relation,
        "entities": list(view.entities),
        "timestamp": view.timestamp,
        "created_timestamp": view.created_timestamp,
        "valid_to": view.valid_to,
        "ttl": format_duration(view.ttl_seconds),
        "ttl_seconds": view.ttl_seconds,
        "online": view.online,
        "owner": view.owner,
        "tags": dict(view.tags),
        "file": view.file,
        "columns": [
            {"name": c.name, "data_type": c.data_type, "role": _role(view, c.name), "description": c.description}
            for c in view.columns
        ],
        "lineage": {
            "sources": [_short(uid) for uid in upstream if uid.startswith("source.")],
            "models": [_short(uid) for uid in upstream if not uid.startswith("source.")],
        },
        "used_by": {"services": used_by["services"], "models": used_by["models"]},
    }


def describe_service(service: FeatureService) -> dict[str, Any]:
    return {
        "kind": "feature_service",
        "name": service.name,
        "version": service.version,
        "exposure": service.exposure,
        "description": service.description,
        "owner": service.owner,
        "file": service.file,
        "features": [str(ref) for ref in service.features],
        "feature_views": list(service.feature_views),
        "request_fields": [
            {"name": f.name, "data_type": f.data_type, "default": "now" if f.default_now else None, "description": f.description}
            for f in service.request_fields
        ],
        "on_demand": [
            {
                "name": f.name,
                "data_type": f.data_type,
                "expression": f.expression,
                "inputs": list(f.inputs),
                "description": f.description,
            }
            for f in service.on_demand
        ],
    }


def _role(view: FeatureView, column: str) -> str:
    if column in view.entities:
        return "entity"
    if column == view.timestamp:
        return "event timestamp"
    if column == view.created_timestamp:
        return "created timestamp"
    if column == view.valid_to:
        return "valid to"
    return "feature"


def _short(unique_id: str) -> str:
    """'model.featsync.stg_users' -> 'stg_users (model)'; sources keep 'source.table'."""
    kind, _, rest = unique_id.partition(".")
    name = rest.split(".", 1)[1] if "." in rest else rest
    return f"{name} ({kind})"
