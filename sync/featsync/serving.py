"""Reading features back online: one MGET for every feature view and entity of a request.

The plan of a request (which views, keys and decoders) is built from the registry once
and cached, so a read does no manifest or registry work. TTL is checked again at read
time against the stored event time, so a value that outlives its key expiry (clock skew,
a restored snapshot) is still reported as expired, exactly as training would treat it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import redis

from featsync.errors import FeatsyncError
from featsync.ondemand import OnDemandPlan
from featsync.online import Layout
from featsync.registry import FeatureView, Registry

PRESENT, NOT_FOUND, EXPIRED = "present", "not_found", "expired"


@dataclass(frozen=True)
class ViewRead:
    view: FeatureView
    layout: Layout
    outputs: tuple[tuple[str, str], ...]  # (feature, output name)


@dataclass
class OnlineResponse:
    """Feast's shape: a dict of lists, entity columns first; plus a status per value."""

    entities: dict[str, list[Any]]
    features: dict[str, list[Any]]
    statuses: dict[str, list[str]]
    event_timestamps: dict[str, list[datetime | None]] = field(default_factory=dict)

    def to_dict(self, include_status: bool = False) -> dict[str, list[Any]]:
        out = {**self.entities, **self.features}
        if include_status:
            out.update({f"{name}__status": values for name, values in self.statuses.items()})
        return out

    def to_arrow(self) -> pa.Table:
        return pa.table(self.to_dict())

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()


@dataclass
class OnlineReader:
    """Reads one project's online feature views from one Redis."""

    registry: Registry
    client: redis.Redis
    key_prefix: str | None = None
    now: Any = time.time
    _plans: dict[tuple, tuple[ViewRead, ...]] = field(default_factory=dict, repr=False)
    _on_demand: dict[tuple, OnDemandPlan | None] = field(default_factory=dict, repr=False)

    def plan(self, features: Sequence[str] | None, feature_service: str | None, full_feature_names: bool) -> tuple[ViewRead, ...]:
        signature = (tuple(features or ()), feature_service, full_feature_names)
        if signature not in self._plans:
            self._plans[signature] = self._build_plan(features, feature_service, full_feature_names)
        return self._plans[signature]

    def _build_plan(self, features, feature_service, full_feature_names) -> tuple[ViewRead, ...]:
        by_view = self.registry.resolve_features(features, feature_service)
        for view_name in by_view:
            if not self.registry.feature_view(view_name).online:
                raise FeatsyncError(f"feature view '{view_name}' is not online")
        seen: dict[str, str] = {}
        plan = []
        for view_name, names in by_view.items():
            view = self.registry.feature_view(view_name)
            outputs = []
            for name in names:
                output = f"{view_name}__{name}" if full_feature_names else name
                if output in seen:
                    raise FeatsyncError(
                        f"feature name '{output}' is provided by both '{seen[output]}' and '{view_name}'; use full_feature_names"
                    )
                seen[output] = view_name
                outputs.append((name, output))
            plan.append(ViewRead(view, Layout(self.key_prefix or self.registry.project_name, view), tuple(outputs)))
        return tuple(plan)

    def get(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        plan = self.plan(features, feature_service, full_feature_names)
        on_demand, requests = self._on_demand_inputs(feature_service, full_feature_names, request_data, len(entity_rows))
        keys: list[bytes] = []
        for read in plan:
            for i, row in enumerate(entity_rows):
                missing = [k for k in read.view.entities if row.get(k) is None]
                if missing:
                    raise FeatsyncError(f"entity row {i} lacks {', '.join(missing)}, needed by feature view '{read.view.name}'")
                keys.append(read.layout.key([row[k] for k in read.view.entities]))
        try:
            if not keys:
                values = []
            elif isinstance(self.client, redis.RedisCluster):
                values = self.client.mget_nonatomic(keys)  # one MGET per slot, sent together
            else:
                values = self.client.mget(keys)
        except redis.RedisError as exc:
            raise FeatsyncError(f"cannot read from Redis: {exc}") from exc
        now_us = int(self.now() * 1_000_000)
        entity_names = list(dict.fromkeys(k for read in plan for k in read.view.entities))
        response = OnlineResponse({k: [row.get(k) for row in entity_rows] for k in entity_names}, {}, {})
        position = 0
        for read in plan:
            for _, output in read.outputs:
                response.features[output] = []
                response.statuses[output] = []
            response.event_timestamps[read.view.name] = []
            for _ in entity_rows:
                raw = values[position]
                position += 1
                status, event_time, decoded = NOT_FOUND, None, {}
                if raw is not None:
                    event_time, decoded = read.layout.decode(raw)
                    ttl = read.view.ttl_seconds
                    # Inclusive bound, as in the join: still valid at exactly event time + ttl.
                    expired = ttl is not None and _micros(event_time) + ttl * 1_000_000 < now_us
                    status = EXPIRED if expired else PRESENT
                    if expired:
                        decoded = {}
                response.event_timestamps[read.view.name].append(event_time if status == PRESENT else None)
                for feature, output in read.outputs:
                    response.features[output].append(decoded.get(feature))
                    response.statuses[output].append(status)
        if on_demand is not None:
            on_demand.apply(response, requests, len(entity_rows))
        return response

    def _on_demand_inputs(self, feature_service, full_feature_names, request_data, rows):
        """The service's cached on-demand plan and this request's typed request fields (validated before any read)."""
        key = (feature_service, full_feature_names)
        if key not in self._on_demand:
            service = self.registry.service(feature_service) if feature_service is not None else None
            self._on_demand[key] = OnDemandPlan.build(service, full_feature_names) if service and service.on_demand else None
        on_demand = self._on_demand[key]
        if on_demand is None:
            if request_data:
                raise FeatsyncError(f"request_data given, but {feature_service or 'these features'} declare no request fields")
            return None, {}
        return on_demand, on_demand.prepare(request_data, rows)


def _micros(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000 + value.microsecond
