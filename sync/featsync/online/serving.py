"""Reading features back online: one MGET for every feature view and entity of a request.

The plan of a request (which views, keys and decoders) is built from the registry once
and cached, so a read does no manifest or registry work. TTL is checked again at read
time against the stored event time, so a value that outlives its key expiry (clock skew,
a restored snapshot) is still reported as expired, exactly as training would treat it.

OnlineReader (blocking redis-py: the Python API, `featsync get`) and AsyncOnlineReader
(redis.asyncio: `featsync serve`) share everything but the Redis call: `prepare` (checks,
keys) before it and `finish` (decoding, statuses, TTL) after it, through one ReadPlan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import redis
import redis.asyncio

from featsync.errors import FeatsyncError, NotFoundError, shown
from featsync.ondemand.compiler import OnDemandFeature, RequestField
from featsync.online.layout import Layout, from_micros, key_texts, utf8
from featsync.online.plan_cache import PlanCache, plan_key
from featsync.online.validity import oldest_valid_event_us
from featsync.registry import FeatureService, FeatureView, Registry, output_name
from featsync.registry.types import FLOAT

PRESENT, NOT_FOUND, EXPIRED = "present", "not_found", "expired"


class RequestError(FeatsyncError):
    """The request itself is malformed (missing entity key, wrong type, ...): a 4xx for the server."""


class OnlineStoreUnavailable(FeatsyncError):
    """Redis could not be read: a 503 for the server, which keeps running and recovers with Redis."""


@dataclass(frozen=True)
class ViewRead:
    view: FeatureView
    layout: Layout
    outputs: tuple[tuple[str, str], ...]  # (feature, output name)
    positions: tuple[int, ...]  # each output's place among the view's declared features
    ttl_us: int | None


@dataclass
class OnlineResponse:
    """Feast's shape: a dict of lists, entity columns first; plus a status per value."""

    entities: dict[str, list[Any]]
    features: dict[str, list[Any]]
    statuses: dict[str, list[str]]
    event_micros: dict[str, list[int | None]] = field(default_factory=dict)  # by feature view; None: not present
    feature_views: dict[str, str] = field(default_factory=dict)  # output name -> its feature view
    view_statuses: dict[str, list[str]] = field(default_factory=dict)  # by feature view, one per entity row
    # The feature columns of kind float: the only ones that can hold NaN or +-inf, which JSON
    # writes as strings (featsync.floats; the HTTP server checks these columns only).
    float_features: frozenset[str] = frozenset()

    @cached_property
    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        """By feature view: each row's event time (UTC), None when not present.

        Built on first use from event_micros (the HTTP server serializes those directly)."""
        return {view: [None if m is None else from_micros(m) for m in micros] for view, micros in self.event_micros.items()}

    def to_dict(self, include_status: bool = False) -> dict[str, list[Any]]:
        out = {**self.entities, **self.features}
        if include_status:
            out.update({f"{name}__status": values for name, values in self.statuses.items()})
        return out

    def to_arrow(self) -> Any:
        """A pyarrow.Table (pyarrow imported here: `featsync get` never needs it)."""
        import pyarrow as pa

        return pa.table(self.to_dict())

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_df(self) -> Any:
        """Feast's name for to_pandas()."""
        return self.to_pandas()


@dataclass(frozen=True)
class OnDemandPlan:
    """What a feature service's on-demand features need online, built once per service and cached.

    `inputs` pairs each feature with, per input, the response column it reads (None: a
    request field), so a request does only dictionary lookups and the compiled closures.
    """

    service: str
    fields: Mapping[str, RequestField]
    features: tuple[tuple[OnDemandFeature, tuple[tuple[str, str | None], ...]], ...]

    @classmethod
    def build(cls, service: FeatureService, full_feature_names: bool) -> OnDemandPlan:
        outputs = {ref.feature: output_name(ref.feature_view, ref.feature, full_feature_names) for ref in service.features}
        features = tuple((f, tuple((name, outputs.get(name)) for name in f.inputs)) for f in service.on_demand)
        return cls(f"{service.name}:v{service.version}", {f.name: f for f in service.request_fields}, features)

    def prepare(self, request_data: Mapping[str, Any] | None, rows: int) -> dict[str, list[Any]]:
        """Each request field as one typed value per entity row; FeatsyncError naming what is wrong.

        A value is a list (one per entity row, as in Feast) or a single value for every row.
        Missing fields are an error, except timestamps declared with default 'now'.
        """
        request_data = request_data or {}
        unknown = sorted(set(request_data) - set(self.fields))
        if unknown:
            known = ", ".join(self.fields) or "none"
            raise FeatsyncError(
                f"unknown request field(s) {', '.join(unknown)} for feature service '{self.service}' (request fields: {known})"
            )
        values: dict[str, list[Any]] = {}
        now = None
        for name, spec in self.fields.items():
            if name not in request_data:
                if not spec.default_now:
                    raise FeatsyncError(f"feature service '{self.service}' needs request field '{name}' ({spec.data_type})")
                now = now or datetime.now(UTC)
                values[name] = [now] * rows
                continue
            given = request_data[name]
            if isinstance(given, (list, tuple)):
                if len(given) != rows:
                    raise FeatsyncError(f"request field '{name}' has {len(given)} values for {rows} entity rows")
                values[name] = [spec.coerce(v) for v in given]
            else:
                values[name] = [spec.coerce(given)] * rows
        return values

    def apply(self, response: OnlineResponse, requests: Mapping[str, list[Any]], rows: int) -> None:
        """Add each on-demand feature to the response: its value and the worst status of its stored inputs."""
        for feature, inputs in self.features:
            values, statuses = [], []
            for i in range(rows):
                env, status = {}, "present"
                for name, column in inputs:
                    if column is None:
                        env[name] = requests[name][i]
                    else:
                        env[name] = response.features[column][i]
                        if status == "present":
                            status = response.statuses[column][i]
                values.append(feature.evaluate(env))
                statuses.append(status)
            response.features[feature.name] = values
            response.statuses[feature.name] = statuses


@dataclass(frozen=True)
class ReadPlan:
    """What one request shape reads: built from the registry once, then reused by every read of it.

    The sync reader (Python API, `featsync get`) and the async server share it: entity
    checks, keys and decoding live here only; the two differ in how they call Redis.
    """

    views: tuple[ViewRead, ...]
    entity_names: tuple[str, ...]  # in first-use order: the response's entity columns
    needed_by: Mapping[str, str]  # entity -> the first feature view that needs it
    on_demand: OnDemandPlan | None = None  # the feature service's on-demand features, computed after the read
    # On-demand features asked for by reference ('<on-demand view>:<feature>', Feast style): the
    # response's columns as (column read or computed, output name); the inputs read only for them
    # are left out. None: every column read is an output.
    select: tuple[tuple[str, str], ...] | None = None

    @cached_property
    def float_outputs(self) -> frozenset[str]:
        """The response's columns of kind float (stored or on-demand), by output name."""
        floats = {
            output
            for read in self.views
            for (_, output), p in zip(read.outputs, read.positions, strict=True)
            if read.layout.features[p][1] == FLOAT
        }
        if self.on_demand is not None:
            floats |= {feature.name for feature, _ in self.on_demand.features if feature.kind == FLOAT}
        if self.select is not None:
            floats = {output for column, output in self.select if column in floats}
        return frozenset(floats)

    def request_columns(self, columns: Mapping[str, Any], request_data: Mapping[str, Any] | None) -> tuple[Mapping, Any]:
        """Feast sends request fields among the entity columns: a column that is a request field of a
        requested on-demand feature (and no entity) is request data. Returns (entities, request data)."""
        if self.on_demand is None:
            return columns, request_data
        moved = [name for name in columns if name in self.on_demand.fields and name not in self.needed_by]
        if not moved:
            return columns, request_data
        given = dict(request_data or {})
        for name in moved:
            if name in given:
                raise RequestError(f"request field '{name}' is given twice: in entities and in request_data")
            given[name] = columns[name]
        return {name: column for name, column in columns.items() if name not in moved}, given

    def columns_from_rows(self, entity_rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        columns = {name: [row.get(name) for row in entity_rows] for name in self.entity_names}
        for name in self.on_demand.fields if self.on_demand is not None else ():
            given = [name in row for row in entity_rows]
            if any(given):  # a request field in the entity rows, as Feast allows: then in every row
                if not all(given):
                    raise RequestError(f"entity row {given.index(False)} lacks request field '{name}', which other rows give")
                columns[name] = [row[name] for row in entity_rows]
        return columns

    def check_columns(self, columns: Mapping[str, Any], strict: bool = False) -> int:
        """The number of entity rows, after checking every column this plan needs.

        strict (JSON requests): columns must be lists of strings or integers, and every
        column must be an entity of the requested views.
        """
        n, same_lengths = None, True
        for name in self.entity_names:
            column = columns.get(name)
            if column is None:
                raise RequestError(f"missing entity key '{name}', needed by feature view '{self.needed_by[name]}'")
            if strict and not isinstance(column, list):
                raise RequestError(f"entity '{name}' must be a list of values (one per row), got {type(column).__name__}")
            for i, value in enumerate(column):
                if value is None:
                    raise RequestError(f"entity row {i} lacks {name}, needed by feature view '{self.needed_by[name]}'")
                if strict and type(value) is not str and type(value) is not int:
                    raise RequestError(
                        f"entity '{name}' row {i}: {shown(value)} is a {_json_type(value)}; entity keys are strings or integers"
                    )
            if n is None:
                n = len(column)
            elif len(column) != n:
                same_lengths = False
        if not same_lengths:
            detail = ", ".join(f"{name}: {len(columns[name])}" for name in self.entity_names)
            raise RequestError(f"entity columns have different lengths ({detail})")
        if strict and len(columns) > len(self.entity_names):  # (every entity column is in: the rest are unknown)
            unknown = [name for name in columns if name not in self.needed_by]
            raise RequestError(
                f"'{unknown[0]}' is not an entity of the requested feature views (entities: {', '.join(self.entity_names)})"
            )
        return n or 0

    def keys(self, columns: Mapping[str, Sequence[Any]]) -> list[bytes]:
        """Every view's keys for every row, view after view: the order `assemble` reads them in."""
        keys: list[bytes] = []
        texts: dict[tuple[str, ...], list[str]] = {}  # views on the same entities share the key texts
        for read in self.views:
            entities = read.view.entities
            if entities not in texts:
                texts[entities] = key_texts([columns[k] for k in entities])
            prefix = read.layout.prefix
            try:
                keys += [(prefix + text).encode() for text in texts[entities]]
            except UnicodeEncodeError:  # a str with a lone surrogate (from Python: JSON cannot carry one)
                raise self._not_utf8(columns, entities) from None
        return keys

    def _not_utf8(self, columns: Mapping[str, Sequence[Any]], entities: Sequence[str]) -> RequestError:
        """The error naming the first entity value that does not encode as UTF-8."""
        for i in range(len(columns[entities[0]])):
            for name in entities:
                value = columns[name][i]
                if not utf8(str(value)):
                    return RequestError(
                        f"entity '{name}' row {i}: {shown(value)} is not valid text (a lone surrogate does not encode as UTF-8)"
                    )
        return RequestError("the key prefix does not encode as UTF-8")

    def assemble(self, columns: Mapping[str, list[Any]], n: int, values: Sequence[bytes | None], now_us: int) -> OnlineResponse:
        """Decode MGET's answer: typed values, a status per value, TTL checked against the event time."""
        features: dict[str, list[Any]] = {}
        statuses_of: dict[str, list[str]] = {}
        event_micros: dict[str, list[int | None]] = {}
        feature_views: dict[str, str] = {}
        view_statuses: dict[str, list[str]] = {}
        for block, read in enumerate(self.views):
            statuses, times, outputs = _read_block(read, values[block * n : (block + 1) * n], now_us)
            name = read.view.name
            event_micros[name] = times
            view_statuses[name] = statuses
            for (_, output), column in zip(read.outputs, outputs, strict=True):
                features[output] = column
                statuses_of[output] = statuses.copy()
                feature_views[output] = name
        entities = {name: columns[name] for name in self.entity_names}
        return OnlineResponse(entities, features, statuses_of, event_micros, feature_views, view_statuses)


VECTOR_MIN = 16  # from this many stored values of a fixed-width view on, decode them as one numpy array


def _read_block(read: ViewRead, block: Sequence[bytes | None], now_us: int) -> tuple[list[str], list, list[list[Any]]]:
    """One view's values for every entity row: statuses, event times, one column per output."""
    n = len(block)
    oldest = oldest_valid_event_us(read.ttl_us, now_us)  # the join's rule (featsync.online.validity)
    if n == 1:  # the common online request: one entity, no per-row bookkeeping
        raw = block[0]
        if raw is None:
            return [NOT_FOUND], [None], [[None] for _ in read.positions]
        event, decoded = read.layout.decode_row(raw)
        if oldest is not None and event < oldest:
            return [EXPIRED], [None], [[None] for _ in read.positions]
        return [PRESENT], [event], [[decoded[p]] for p in read.positions]
    statuses = [NOT_FOUND] * n
    times: list[int | None] = [None] * n
    present = [i for i, raw in enumerate(block) if raw is not None]
    layout = read.layout
    if len(present) >= VECTOR_MIN and layout.fixed_width:
        micros, columns = layout.decode_columns([block[i] for i in present])
    else:
        micros, rows = [], []
        for i in present:
            event, decoded = layout.decode_row(block[i])
            micros.append(event)
            rows.append(decoded)
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in layout.features]
    expired = set() if oldest is None else {j for j, event in enumerate(micros) if event < oldest}
    for j, i in enumerate(present):
        if j in expired:
            statuses[i] = EXPIRED
        else:
            statuses[i] = PRESENT
            times[i] = micros[j]
    if len(present) == n and not expired:
        return statuses, times, [columns[p] for p in read.positions]
    outputs = []
    for p in read.positions:
        column, out = columns[p], [None] * n
        for j, i in enumerate(present):
            if j not in expired:
                out[i] = column[j]
        outputs.append(out)
    return statuses, times, outputs


@dataclass
class OnlineReader:
    """Reads one project's online feature views from one Redis (redis-py, blocking)."""

    registry: Registry
    client: Any  # redis.Redis / redis.RedisCluster here; their asyncio versions in AsyncOnlineReader
    key_prefix: str | None = None
    now: Any = time.time
    _plans: PlanCache = field(default_factory=PlanCache, repr=False)  # clients choose the keys: bounded LRU
    _cluster: Any = field(default=None, repr=False)  # featsync.online.cluster.ClusterReader, made on first use

    def _cluster_reader(self) -> Any:
        if self._cluster is None:
            from featsync.online.cluster import ClusterReader

            self._cluster = ClusterReader(self.client)
        return self._cluster

    def plan(self, features: Sequence[str] | None, feature_service: str | None, full_feature_names: bool) -> ReadPlan:
        key = plan_key(features, feature_service, full_feature_names)  # duplicates dropped: one plan, a short key
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(key[0] or None, feature_service, full_feature_names)
            self._plans.put(key, plan)
        return plan

    def _build_plan(self, features, feature_service, full_feature_names) -> ReadPlan:
        if features and feature_service is None:
            stored, chosen = self.split_on_demand(features)
            if chosen:
                return self._on_demand_plan(features, stored, chosen, full_feature_names)
        by_view = self.registry.resolve_features(features, feature_service)
        for view_name in by_view:
            if not self.registry.feature_view(view_name).online:
                raise FeatsyncError(f"feature view '{view_name}' is not online")
        seen: dict[str, str] = {}
        needed_by: dict[str, str] = {}
        plan = []
        for view_name, names in by_view.items():
            view = self.registry.feature_view(view_name)
            outputs = []
            for name in names:
                output = output_name(view_name, name, full_feature_names)
                if output in seen:
                    raise FeatsyncError(
                        f"feature name '{output}' is provided by both '{seen[output]}' and '{view_name}'; use full_feature_names"
                    )
                seen[output] = view_name
                outputs.append((name, output))
            for entity in view.entities:
                needed_by.setdefault(entity, view_name)
            ttl_us = None if view.ttl_seconds is None else view.ttl_seconds * 1_000_000
            positions = tuple(view.feature_names.index(name) for name, _ in outputs)
            layout = Layout(self.key_prefix or self.registry.project_name, view)
            plan.append(ViewRead(view, layout, tuple(outputs), positions, ttl_us))
        service = self.registry.service(feature_service) if feature_service is not None else None
        on_demand = OnDemandPlan.build(service, full_feature_names) if service is not None and service.on_demand else None
        return ReadPlan(tuple(plan), tuple(needed_by), needed_by, on_demand)

    def split_on_demand(self, features: Sequence[str]) -> tuple[list[str], list[tuple[str, FeatureService, Any]]]:
        """The references to stored features, and those to on-demand features: '<view>:<feature>'
        (or ':*') where <view> is no feature view but a feature service with on-demand features,
        by exposure name (fraud_detection_v2) or name (fraud_detection: its latest version).
        Each on-demand feature comes as (the view name as written, its service, the feature)."""
        stored: list[str] = []
        chosen: list[tuple[str, FeatureService, Any]] = []
        for ref in features:
            view_name, sep, name = ref.partition(":")
            if not sep or view_name in self.registry.feature_views:
                stored.append(ref)
                continue
            try:
                service = self.registry.service(view_name)
            except NotFoundError:
                service = None
            if service is None or not service.on_demand:
                stored.append(ref)  # resolve_features reports the unknown feature view
                continue
            picks = [f for f in service.on_demand if name in ("*", f.name)]
            if not picks:
                known = ", ".join(f.name for f in service.on_demand)
                message = f"on-demand feature view '{view_name}' has no feature '{name}' (features: {known})"
                raise NotFoundError(message, "on-demand feature")
            if chosen and chosen[0][1] is not service:
                raise RequestError(
                    f"on-demand features of one feature service per request: '{chosen[0][0]}' and '{view_name}' differ"
                )
            chosen += [(view_name, service, f) for f in picks if f not in [c[2] for c in chosen]]
        return stored, chosen

    def _on_demand_plan(
        self, refs: Sequence[str], stored: list[str], chosen: list[tuple[str, FeatureService, Any]], full_feature_names: bool
    ) -> ReadPlan:
        """Stored features plus on-demand ones by reference: their inputs are read too (under internal
        names view__feature) and computed as a service would; only what was asked is output."""
        service = chosen[0][1]
        features = tuple(f for _, _, f in chosen)
        inputs = {name for f in features for name in f.inputs}
        input_refs = [str(ref) for ref in service.features if ref.feature in inputs]
        if not stored and not input_refs:  # nothing to read, so no entity rows to count
            raise RequestError(
                f"on-demand feature '{features[0].name}' reads no stored feature; request it with a stored feature"
                f" or through feature service '{service.name}'"
            )
        internal = self._build_plan([*stored, *input_refs], None, True)
        subset = replace(service, on_demand=features, request_fields=tuple(r for r in service.request_fields if r.name in inputs))
        select: list[tuple[str, str]] = []  # in the order asked
        for ref in refs:
            if ref in stored:
                for view_name, names in self.registry.resolve_features([ref]).items():
                    select += [(output_name(view_name, n, True), output_name(view_name, n, full_feature_names)) for n in names]
            else:
                view_name, _, name = ref.partition(":")
                select += [
                    (f.name, output_name(a, f.name, full_feature_names))
                    for a, _, f in chosen
                    if a == view_name and name in ("*", f.name)
                ]
        select = list(dict.fromkeys(select))
        outputs = [output for _, output in select]
        duplicates = sorted({output for output in outputs if outputs.count(output) > 1})
        if duplicates:
            raise FeatsyncError(f"feature name '{duplicates[0]}' is requested twice; use full_feature_names")
        return replace(internal, on_demand=OnDemandPlan.build(subset, True), select=tuple(select))

    def prepare(
        self, plan: ReadPlan, columns: Mapping[str, Any], request_data: Mapping[str, Any] | None, strict: bool = False
    ) -> tuple[int, list[bytes], dict[str, list[Any]]]:
        """Everything before the Redis call (shared by both readers): checked entities, the keys,
        and the typed request fields of on-demand features (checked before any read)."""
        columns, request_data = plan.request_columns(columns, request_data)
        n = plan.check_columns(columns, strict)
        if plan.on_demand is None:
            if request_data:
                raise RequestError(
                    f"no on-demand features requested, so request_data ({', '.join(map(str, request_data))}) is not used"
                )
            return n, plan.keys(columns), {}
        return n, plan.keys(columns), plan.on_demand.prepare(request_data, n)

    def finish(
        self,
        plan: ReadPlan,
        columns: Mapping[str, list[Any]],
        n: int,
        values: Sequence[bytes | None],
        requests: Mapping[str, list[Any]],
    ) -> OnlineResponse:
        """Everything after the Redis call: decoding, statuses, TTL, on-demand features (shared by both readers)."""
        response = plan.assemble(columns, n, values, round(self.now() * 1_000_000))  # round: exact at a whole us
        if plan.on_demand is not None:
            plan.on_demand.apply(response, requests, n)
        if plan.select is not None:
            features, statuses, views = {}, {}, {}
            for column, output in plan.select:
                features[output], statuses[output] = response.features[column], response.statuses[column]
                if column in response.feature_views:
                    views[output] = response.feature_views[column]
            response.features, response.statuses, response.feature_views = features, statuses, views
        response.float_features = plan.float_outputs
        return response

    def get(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        plan = self.plan(features, feature_service, full_feature_names)
        columns = plan.columns_from_rows(entity_rows)
        n, keys, requests = self.prepare(plan, columns, request_data)
        try:
            if not keys:
                values = []
            elif isinstance(self.client, redis.RedisCluster):
                values = self._cluster_reader().mget(keys)  # a pipeline of GETs per master, all at once
            else:
                values = self.client.mget(keys)
        except redis.RedisError as exc:
            raise OnlineStoreUnavailable(f"cannot read from Redis: {exc}") from exc
        return self.finish(plan, columns, n, values, requests)


@dataclass
class AsyncOnlineReader(OnlineReader):
    """The same reads on redis.asyncio (the HTTP server): one awaited MGET per request, through
    `mget` (connections.AsyncMget, pipelined raw connections; a Redis Cluster's
    cluster.AsyncClusterMget, one such client per master) when the server has one.

    `timeout` bounds each read with one asyncio timer. The client itself is made without a
    socket timeout: redis-py then wraps every send in `asyncio.wait_for`, a task per command
    on Python 3.11, which cost more CPU than the rest of a one-entity request. A read cut
    short is cancelled, and redis-py drops that connection, so no half-read reply is reused.
    """

    timeout: float | None = None
    mget: Any = None  # connections.async_mget's lean client (AsyncMget, AsyncClusterMget): the MGET's path

    async def get_columns(
        self,
        columns: Mapping[str, Any],
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
    ) -> tuple[ReadPlan, OnlineResponse]:
        """Entities as Feast sends them, columns {name: [values]}, checked strictly (JSON input)."""
        plan = self.plan(features, feature_service, full_feature_names)
        n, keys, requests = self.prepare(plan, columns, request_data, strict=True)
        try:
            if not keys:
                values = []
            elif self.mget is not None:  # bounded by its own read timeout: no timer per request
                values = await self.mget.mget(keys)
            else:
                async with asyncio.timeout(self.timeout):
                    if isinstance(self.client, redis.asyncio.RedisCluster):
                        values = await self.client.mget_nonatomic(keys)
                    else:
                        values = await self.client.mget(keys)
        except TimeoutError as exc:
            raise OnlineStoreUnavailable(f"cannot read from Redis: no answer within {self.timeout} s") from exc
        except (redis.RedisError, OSError) as exc:
            raise OnlineStoreUnavailable(f"cannot read from Redis: {exc}") from exc
        return plan, self.finish(plan, columns, n, values, requests)


def _json_type(value: Any) -> str:
    return {bool: "boolean", float: "number", list: "list", dict: "object"}.get(type(value), type(value).__name__)
