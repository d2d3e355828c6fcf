"""The registry: feature views, entities and feature services read from dbt's manifest."""

from featsync.registry.declarations import (
    Column,
    Entity,
    FeatureRef,
    FeatureService,
    FeatureView,
    Monitoring,
    Registry,
    format_duration,
    output_name,
    parse_duration,
    require_one_selection,
)

__all__ = [
    "Column",
    "Entity",
    "FeatureRef",
    "FeatureService",
    "FeatureView",
    "Monitoring",
    "Registry",
    "format_duration",
    "output_name",
    "parse_duration",
    "require_one_selection",
]
