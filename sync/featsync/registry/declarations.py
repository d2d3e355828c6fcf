"""The registry: typed feature views, entities and feature services read from dbt's manifest.

The dbt manifest is the only source of truth. Feature views are models whose
``config.meta.feature_view`` declares entities, timestamps, ttl and so on; feature
services are exposures of type ``ml`` whose ``config.meta.feature_service`` lists
``feature_view:feature`` references. This module turns that JSON into frozen
dataclasses and validates it, reporting every invalid declaration with its file,
node and key, so a typo never reaches a training set or the online store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from featsync.errors import DeclarationError, FeatsyncError, NotFoundError, Problem
from featsync.ondemand.compiler import EVALUATOR_KINDS, ExpressionError, OnDemandFeature, RequestField, compile_feature
from featsync.registry.identifiers import column_problem, identifier_problem
from featsync.registry.types import KEY_KINDS, OTHER, TIMESTAMP, ColumnType, TypeProblem, column_type, dialect_of

FEATURE_VIEW_KEYS = frozenset(
    {"entities", "timestamp", "created_timestamp", "valid_to", "ttl", "online", "version", "owner", "tags", "description"}
    | {"monitoring"}
)
FEATURE_SERVICE_KEYS = frozenset({"name", "version", "features", "description", "request_fields", "on_demand"})
REQUEST_FIELD_KEYS = frozenset({"data_type", "description", "default"})
ON_DEMAND_KEYS = frozenset({"expression", "data_type", "description"})
_DURATION = re.compile(r"^\s*([0-9]+)([dhms]?)\s*$", re.IGNORECASE)
# A service is named in requests as `name` or `name:vN`, so its name holds no ':' (nor spaces).
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_DURATION_SECONDS = 36_500 * 86_400  # 100 years; the macro featsync.duration_seconds has the same bound
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}


def parse_duration(value: Any) -> int | None:
    """Seconds in a ttl/window: an int of seconds or '<n>d|h|m|s'; None, '' and 0 mean no limit.

    At most MAX_DURATION_SECONDS: a longer ttl overflows the engines' interval arithmetic
    (spine time - ttl) and Redis' expiry times. ASCII digits only, no space inside ('90 d'
    is refused). The dbt macro ``featsync.duration_seconds`` implements the same grammar;
    the tests run one table of cases through both.
    """
    if value is None or value == "" or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise ValueError(f"{value} is not a whole number of seconds >= 0")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a duration is a whole number of seconds >= 0")
        seconds = value
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration; use seconds or <n>d, <n>h, <n>m, <n>s (e.g. 90d, 12h, 30m)")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(
            f"'{value}' is longer than {MAX_DURATION_SECONDS // 86400}d (100 years), the longest duration featsync takes; "
            "leave it out (or 0) for no limit"
        )
    return seconds or None


def output_name(feature_view: str, feature: str, full_feature_names: bool) -> str:
    """A feature's column name in a response or training set: `<view>__<feature>` with full
    feature names, else the bare feature name (the macros' _pit_plan applies the same rule)."""
    return f"{feature_view}__{feature}" if full_feature_names else feature


def require_one_selection(features: Sequence[str] | None, feature_service: str | None) -> None:
    """A request names features or a feature service: exactly one of them."""
    if (not features) == (feature_service is None):
        raise FeatsyncError("give exactly one of features or a feature service")


def format_duration(seconds: int | None) -> str:
    """The shortest exact '<n><unit>' for a number of seconds; 'none' for no limit."""
    if not seconds:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # as declared (lower case)
    description: str = ""
    # What featsync makes of data_type (featsync.registry.types): read in the target's dialect
    # by the registry; read in generic SQL when a Column is made without it.
    type: ColumnType = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.type is None:
            try:
                parsed = column_type(self.data_type)
            except TypeProblem:
                parsed = ColumnType(self.data_type, OTHER)
            object.__setattr__(self, "type", parsed)


# feature_view.monitoring: thresholds of featsync drift / status / verify. Ratios and
# p-values are numbers in [0, 1] (psi any number >= 0), durations as for ttl.
MONITORING_RATIOS = ("ks_statistic", "ks_pvalue", "chi2_pvalue", "share_change", "null_rate_change", "max_mismatch_rate")
MONITORING_DURATIONS = ("max_staleness", "max_push_lag", "max_push_age")
MONITORING_KEYS = frozenset({"psi", "min_online_keys", *MONITORING_RATIOS, *MONITORING_DURATIONS})


@dataclass(frozen=True)
class Monitoring:
    """Thresholds a feature view is monitored against; each has a default.

    Drift: a numeric feature breaches when PSI > psi, or when KS rejects sameness
    (p < ks_pvalue) *and* the KS statistic > ks_statistic: on large windows any tiny
    shift is significant, so significance alone would flag everything. A categorical
    feature breaches when chi-square p < chi2_pvalue and some category's share moved by
    more than share_change. Any feature breaches when its null rate moved by more than
    null_rate_change. Status and verify: see docs/monitoring.md.
    """

    psi: float = 0.2
    ks_statistic: float = 0.1
    ks_pvalue: float = 0.01
    chi2_pvalue: float = 0.01
    share_change: float = 0.1
    null_rate_change: float = 0.05
    max_staleness: int | None = None  # seconds; the loader defaults it to the view's ttl
    max_push_lag: int | None = 86400
    max_push_age: int | None = None
    min_online_keys: int = 1
    max_mismatch_rate: float = 0.0


@dataclass(frozen=True)
class FeatureView:
    """A dbt model declared as a feature view."""

    name: str
    unique_id: str
    package: str
    relation: str
    entities: tuple[str, ...]
    timestamp: str
    created_timestamp: str | None
    valid_to: str | None
    ttl_seconds: int | None
    online: bool
    version: int
    owner: str | None
    tags: Mapping[str, str]
    description: str
    columns: tuple[Column, ...]
    file: str
    monitoring: Monitoring = Monitoring()

    @property
    def features(self) -> tuple[Column, ...]:
        """Every declared column that is not a key or one of the view's timestamps."""
        reserved = {*self.entities, self.timestamp, self.created_timestamp, self.valid_to}
        return tuple(c for c in self.columns if c.name not in reserved)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.features)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Entity:
    """A join key shared by feature views; its type and description come from their columns."""

    name: str
    data_type: str
    description: str
    feature_views: tuple[str, ...]


@dataclass(frozen=True)
class FeatureRef:
    feature_view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.feature_view}:{self.feature}"


@dataclass(frozen=True)
class FeatureService:
    """A versioned feature set used by an ML model: a dbt exposure of type ml."""

    name: str
    version: int
    exposure: str
    unique_id: str
    features: tuple[FeatureRef, ...]
    description: str
    owner: str | None
    file: str
    request_fields: tuple[RequestField, ...] = ()
    on_demand: tuple[OnDemandFeature, ...] = ()  # computed from features and request fields, offline and online

    @property
    def feature_views(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref.feature_view for ref in self.features))


@dataclass(frozen=True)
class Registry:
    """Everything featsync knows about a dbt project, read from one manifest."""

    project_name: str
    adapter_type: str
    feature_views: Mapping[str, FeatureView]
    services: Mapping[str, FeatureService]  # by exposure name, e.g. fraud_detection_v1
    entities: Mapping[str, Entity]
    manifest: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Registry:
        problems: list[Problem] = []
        views = {}
        invalid: set[str] = set()  # reported once here, not again by every service using them
        metadata = manifest.get("metadata", {})
        dialect = dialect_of(metadata.get("adapter_type"))
        declared: dict[str, Mapping[str, Any]] = {}  # name -> the first node declaring it
        for node in manifest.get("nodes", {}).values():
            meta = (node.get("config") or {}).get("meta") or {}
            # A key present with null (a mis-indented block) is a declaration to refuse, not an absent one.
            if node.get("resource_type") != "model" or "feature_view" not in meta:
                continue
            name = node["name"]
            if name in declared:  # e.g. a dbt package's model next to the project's own: one would replace the other
                first = declared[name]
                problems.append(
                    Problem(
                        _yaml_file(node),
                        f"model '{name}'",
                        "feature_view",
                        f"feature view '{name}' is declared twice: {first['unique_id']} ({_yaml_file(first)}) "
                        f"and {node['unique_id']} ({_yaml_file(node)})",
                    )
                )
                views.pop(name, None)
                invalid.add(name)
                continue
            declared[name] = node
            view = _feature_view(node, meta["feature_view"], problems, dialect)
            if view is None:
                invalid.add(name)
            else:
                views[view.name] = view
        entities = _entities(views, problems)
        services = {}
        for exposure in manifest.get("exposures", {}).values():
            spec = (exposure.get("config") or {}).get("meta", {}).get("feature_service") or exposure.get("meta", {}).get(
                "feature_service"
            )
            if spec is None:
                continue
            service = _feature_service(exposure, spec, views, invalid, problems, dialect)
            if service is not None:
                services[service.exposure] = service
        _check_service_versions(services.values(), problems)
        if problems:
            raise DeclarationError(problems)
        return cls(
            project_name=metadata.get("project_name", ""),
            adapter_type=metadata.get("adapter_type", ""),
            feature_views=dict(sorted(views.items())),
            services=dict(sorted(services.items())),
            entities=dict(sorted(entities.items())),
            manifest=manifest,
        )

    # -- lookups -----------------------------------------------------------------

    def feature_view(self, name: str) -> FeatureView:
        try:
            return self.feature_views[name]
        except KeyError:
            raise NotFoundError(_unknown("feature view", name, self.feature_views), "feature view") from None

    def service(self, name: str) -> FeatureService:
        """A service by exposure name (``fraud_detection_v1``), ``name:vN``, or name (latest version)."""
        if name in self.services:
            return self.services[name]
        base, _, version = name.partition(":")
        candidates = [s for s in self.services.values() if s.name == base]
        if version:
            candidates = [s for s in candidates if f"v{s.version}" == version.lower() or str(s.version) == version]
        if not candidates:
            known = sorted({s.name for s in self.services.values()} | set(self.services))
            raise NotFoundError(_unknown("feature service", name, known), "feature service")
        return max(candidates, key=lambda s: s.version)

    def resolve_features(self, features: Sequence[str] | None = None, feature_service: str | None = None) -> dict[str, list[str]]:
        """The features a request names, by feature view in first-use order, '*' expanded.

        `features` are 'feature_view:feature' (or 'feature_view:*') references; a service
        stands for its own list. Unknown views or features raise NotFoundError naming them.
        """
        require_one_selection(features, feature_service)
        refs = [str(r) for r in self.service(feature_service).features] if feature_service else list(features or ())
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            view_name, sep, feature = ref.partition(":")
            if not sep or not view_name or not feature:
                raise FeatsyncError(f"'{ref}' is not 'feature_view:feature' (or 'feature_view:*')")
            view = self.feature_view(view_name)
            chosen = by_view.setdefault(view_name, [])
            for name in view.feature_names if feature == "*" else [feature]:
                if name not in view.feature_names:
                    raise NotFoundError(
                        f"feature view '{view_name}' has no feature '{name}' (features: {', '.join(view.feature_names)})",
                        "feature",
                    )
                if name not in chosen:
                    chosen.append(name)
        return by_view

    def select(self, select: Iterable[str] = ()) -> list[FeatureView]:
        """The feature views picked by dbt-style selectors (featsync.registry.selection), all by default."""
        from featsync.registry.selection import select as select_views

        return select_views(self, select)

    def online_views(self, select: Iterable[str] = ()) -> list[FeatureView]:
        """The online feature views, all or the selected ones (dbt-style selectors). A view named
        plainly that is unknown or not online is an error naming it; a pattern (tag:, +x, *)
        picks the online views among its matches."""
        from featsync.registry.selection import is_plain_name, parse_selectors

        select = list(select)
        for name in (atom for intersection in parse_selectors(select) for atom in intersection):
            if is_plain_name(name) and not self.feature_view(name).online:  # NotFoundError names the known views
                raise FeatsyncError(f"feature view '{name}' is not online (set online: true in its meta)")
        views = [v for v in self.select(select) if v.online]
        if select and not views:
            raise NotFoundError(f"selection '{' '.join(select)}' matches no online feature view")
        return views

    def entity(self, name: str) -> Entity:
        try:
            return self.entities[name]
        except KeyError:
            raise NotFoundError(_unknown("entity", name, self.entities), "entity") from None

    # -- lineage -----------------------------------------------------------------

    def upstream(self, unique_id: str) -> list[str]:
        """Every model, snapshot, seed and source the node is built from, nearest first."""
        parent_map = self.manifest.get("parent_map", {})
        seen: dict[str, None] = {}
        frontier = list(parent_map.get(unique_id, []))
        while frontier:
            nxt = []
            for uid in frontier:
                if uid not in seen:
                    seen[uid] = None
                    nxt.extend(parent_map.get(uid, []))
            frontier = nxt
        return [uid for uid in seen if uid.split(".", 1)[0] in {"model", "snapshot", "seed", "source"}]

    def used_by(self, feature_view: str) -> dict[str, list[str]]:
        """The services that list the view, and the models built on it (training sets and others)."""
        view = self.feature_view(feature_view)
        services = [s.exposure for s in self.services.values() if view.name in s.feature_views]
        child_map = self.manifest.get("child_map", {})
        models = sorted(uid.split(".")[-1] for uid in child_map.get(view.unique_id, []) if uid.startswith("model."))
        return {"services": services, "models": models}


# -- building and validating ------------------------------------------------------


def _yaml_file(node: Mapping[str, Any]) -> str:
    """The YAML file that declares a node (patch_path is 'package://path')."""
    patch = node.get("patch_path") or node.get("original_file_path") or "?"
    return patch.split("://", 1)[-1]


def _feature_view(node: Mapping[str, Any], spec: Any, problems: list[Problem], dialect: str | None) -> FeatureView | None:
    name = node["name"]
    where = f"model '{name}'"
    file = _yaml_file(node)
    start = len(problems)

    def problem(key: str, message: str) -> None:
        problems.append(Problem(file, where, f"feature_view.{key}" if key else "feature_view", message))

    if not isinstance(spec, Mapping):
        got = "null" if spec is None else str(spec).lower() if isinstance(spec, bool) else type(spec).__name__
        problem("", f"must be a mapping, got {got} (keys: {', '.join(sorted(FEATURE_VIEW_KEYS))})")
        return None
    for key in sorted(set(spec) - FEATURE_VIEW_KEYS):
        problem(key, f"unknown key; expected one of {', '.join(sorted(FEATURE_VIEW_KEYS))}")

    # Every name featsync writes into SQL must be a plain identifier (featsync.registry.identifiers).
    name_problem = identifier_problem(name)
    if name_problem:
        problems.append(Problem(file, where, "name", f"the feature view's name {name_problem}"))
    columns = []
    for col in (node.get("columns") or {}).values():
        data_type = (col.get("data_type") or "").strip().lower()
        name_problem = column_problem(col["name"])
        if name_problem:
            problems.append(Problem(file, where, f"columns.{col['name']}", f"column name {name_problem}"))
        try:
            parsed = column_type(data_type, dialect) if data_type else ColumnType("", OTHER)
        except TypeProblem as exc:
            problems.append(Problem(file, where, f"columns.{col['name']}.data_type", str(exc)))
            parsed = ColumnType(data_type, OTHER)
        if not data_type:
            problems.append(
                Problem(file, where, f"columns.{col['name']}.data_type", "every column of a feature view needs a data_type")
            )
        columns.append(Column(col["name"], data_type, col.get("description") or "", parsed))
    declared = {c.name: c for c in columns}
    declared_list = ", ".join(declared) or "none"

    entities = spec.get("entities")
    if isinstance(entities, str):
        entities = [entities]
    if not entities or not isinstance(entities, list) or not all(isinstance(e, str) for e in entities):
        problem("entities", "must be a non-empty list of join-key column names")
        entities = []
    for entity in entities:
        if entity not in declared:
            problem("entities", f"unknown entity column '{entity}' (declared columns: {declared_list})")
        elif declared[entity].data_type and declared[entity].type.kind not in KEY_KINDS:
            problem(
                "entities",
                f"entity column '{entity}' has type '{declared[entity].data_type}'; entity keys are strings or "
                "integers (the online store looks them up by their text); cast it in the model",
            )
    if len(set(entities)) != len(entities):
        problem("entities", f"lists a column twice: {entities}")

    def timestamp_column(key: str, required: bool) -> str | None:
        value = spec.get(key)
        if value is None:
            if required:
                problem(key, "missing: name the event-time column (a timestamp: naive UTC, or with a time zone)")
            return None
        if not isinstance(value, str):
            problem(key, f"must be a column name, got {value!r}")
            return None
        if value not in declared:
            problem(key, f"column '{value}' is not declared in the model's columns (declared columns: {declared_list})")
            return None
        data_type = declared[value].data_type
        if data_type and declared[value].type.kind != TIMESTAMP:
            problem(
                key,
                f"column '{value}' has type '{data_type}'; featsync time columns are timestamps (naive ones "
                f"mean UTC; zoned ones are compared as instants). Cast it in the model, e.g. `cast({value} as timestamp)`",
            )
        return value

    timestamp = timestamp_column("timestamp", required=True)
    created = timestamp_column("created_timestamp", required=False)
    valid_to = timestamp_column("valid_to", required=False)

    try:
        ttl = parse_duration(spec.get("ttl"))
    except ValueError as exc:
        problem("ttl", str(exc))
        ttl = None

    online = spec.get("online", False)
    if not isinstance(online, bool):
        problem("online", f"must be true or false, got {online!r}")
    version = spec.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problem("version", f"must be a whole number >= 1, got {version!r}")
    owner = spec.get("owner")
    if owner is not None and not isinstance(owner, str):
        problem("owner", f"must be a string, got {owner!r}")
    tags = spec.get("tags") or {}
    if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
        tags = {t: "" for t in tags}
    if not isinstance(tags, Mapping):
        problem("tags", f"must be a mapping of tag to value (or a list of tags), got {tags!r}")
        tags = {}
    if entities and timestamp and not any(c.name not in {*entities, timestamp, created, valid_to} for c in columns):
        problem("", "declares no feature columns besides its keys and timestamps")
    if online is True:
        for column in columns:
            if column.name not in {*entities, timestamp, created, valid_to} and column.data_type:
                reason = column.type.online_problem
                if reason:
                    problems.append(Problem(file, where, f"columns.{column.name}.data_type", f"online feature: {reason}"))

    monitoring = _monitoring(spec.get("monitoring"), ttl, problem)

    if len(problems) > start:
        return None
    return FeatureView(
        name=name,
        unique_id=node["unique_id"],
        package=node.get("package_name", ""),
        relation=node.get("relation_name") or "",
        entities=tuple(entities),
        timestamp=timestamp,
        created_timestamp=created,
        valid_to=valid_to,
        ttl_seconds=ttl,
        online=online,
        version=version,
        owner=owner,
        tags={str(k): str(v) for k, v in tags.items()},
        description=spec.get("description") or node.get("description") or "",
        columns=tuple(columns),
        file=file,
        monitoring=monitoring,
    )


def _monitoring(spec: Any, ttl: int | None, problem: Any) -> Monitoring:
    """feature_view.monitoring, validated like the rest: unknown keys and bad values are problems."""
    defaults = Monitoring(max_staleness=ttl)  # data older than the ttl is useless online
    if spec is None:
        return defaults
    if not isinstance(spec, Mapping):
        problem("monitoring", f"must be a mapping of {', '.join(sorted(MONITORING_KEYS))}, got {spec!r}")
        return defaults
    values: dict[str, Any] = {}
    for key in sorted(set(spec) - MONITORING_KEYS):
        problem(f"monitoring.{key}", f"unknown key; expected one of {', '.join(sorted(MONITORING_KEYS))}")
    for key, value in spec.items():
        if key not in MONITORING_KEYS:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in MONITORING_DURATIONS:
            try:
                values[key] = parse_duration(value)  # 0 or '' switches the check off
            except ValueError as exc:
                problem(f"monitoring.{key}", str(exc))
        elif key == "min_online_keys":
            if not number or value < 0 or value != int(value):
                problem(f"monitoring.{key}", f"must be a whole number >= 0, got {value!r}")
            else:
                values[key] = int(value)
        elif key == "psi":
            if not number or value < 0:
                problem(f"monitoring.{key}", f"must be a number >= 0, got {value!r}")
            else:
                values[key] = float(value)
        elif not number or not 0 <= value <= 1:
            problem(f"monitoring.{key}", f"must be a number between 0 and 1, got {value!r}")
        else:
            values[key] = float(value)
    return replace(defaults, **values)


def _entities(views: Mapping[str, FeatureView], problems: list[Problem]) -> dict[str, Entity]:
    found: dict[str, list[tuple[FeatureView, Column]]] = {}
    for view in views.values():
        for key in view.entities:
            found.setdefault(key, []).append((view, view.column(key)))
    entities = {}
    for key, uses in found.items():
        # One key, one kind: varchar and text (or int and bigint) are the same key to every engine and to Redis.
        kinds = {col.type.kind for _, col in uses}
        if len(kinds) > 1:
            detail = ", ".join(f"{v.name}: {c.data_type}" for v, c in uses)
            first = uses[0][0]
            problems.append(
                Problem(
                    first.file,
                    f"model '{first.name}'",
                    "feature_view.entities",
                    f"entity '{key}' has different types across feature views ({detail})",
                )
            )
        description = next((c.description for _, c in uses if c.description), "")
        entities[key] = Entity(key, uses[0][1].data_type, description, tuple(v.name for v, _ in uses))
    return entities


def _feature_service(
    exposure: Mapping[str, Any],
    spec: Any,
    views: Mapping[str, FeatureView],
    invalid_views: set[str],
    problems: list[Problem],
    dialect: str | None = None,
) -> FeatureService | None:
    exposure_name = exposure["name"]
    where = f"exposure '{exposure_name}'"
    file = exposure.get("original_file_path", "?")
    start = len(problems)

    def problem(key: str, message: str) -> None:
        problems.append(Problem(file, where, f"feature_service.{key}" if key else "feature_service", message))

    if exposure.get("type") != "ml":
        problems.append(
            Problem(file, where, "type", f"a feature service is an exposure of type ml, got '{exposure.get('type')}'")
        )
    if not isinstance(spec, Mapping):
        problem("", "must be a mapping with name, version and features")
        return None
    for key in sorted(set(spec) - FEATURE_SERVICE_KEYS):
        problem(key, f"unknown key; expected one of {', '.join(sorted(FEATURE_SERVICE_KEYS))}")
    name = spec.get("name", exposure_name)
    if not isinstance(name, str) or not _SERVICE_NAME.match(name):
        problem("name", f"must be letters, digits, _, - and . (requests pick a version as name:vN), got {name!r}")
    version = spec.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problem("version", f"must be a whole number >= 1, got {version!r}")

    raw = spec.get("features")
    if not raw or not isinstance(raw, list):
        problem("features", "must be a non-empty list of 'feature_view:feature' strings")
        raw = []
    refs: list[FeatureRef] = []
    unusable = False
    for item in raw:
        view_name, sep, feature = str(item).partition(":")
        if not sep or not view_name or not feature:
            problem("features", f"'{item}' is not 'feature_view:feature' (or 'feature_view:*')")
            continue
        view = views.get(view_name)
        if view is None and view_name in invalid_views:
            unusable = True  # its feature view is invalid and was reported already
            continue
        if view is None:
            problem("features", f"'{item}': no feature view named '{view_name}' (known: {', '.join(sorted(views)) or 'none'})")
            continue
        if feature == "*":
            refs.extend(FeatureRef(view_name, f) for f in view.feature_names)
        elif feature not in view.feature_names:
            problem(
                "features",
                f"'{item}': feature view '{view_name}' has no feature '{feature}' (features: {', '.join(view.feature_names)})",
            )
        else:
            refs.append(FeatureRef(view_name, feature))

    seen: dict[str, FeatureRef] = {}
    for ref in refs:
        if ref.feature in seen:
            other = seen[ref.feature]
            what = "is listed twice" if other == ref else f"is provided by both '{other}' and '{ref}'"
            problem("features", f"duplicate feature name '{ref.feature}': it {what}")
        seen[ref.feature] = ref

    depends = set(exposure.get("depends_on", {}).get("nodes", []))
    for view_name in dict.fromkeys(r.feature_view for r in refs):
        if views[view_name].unique_id not in depends:
            problem(
                "features",
                f"uses feature view '{view_name}' but depends_on lacks ref('{view_name}'); add it so dbt lineage is right",
            )

    request_fields, on_demand = (
        _on_demand(spec, refs, views, problem, dialect) if not unusable and len(problems) == start else ((), ())
    )
    if unusable or len(problems) > start:
        return None
    owner = exposure.get("owner") or {}
    return FeatureService(
        name=name,
        version=version,
        exposure=exposure_name,
        unique_id=exposure["unique_id"],
        features=tuple(refs),
        description=spec.get("description") or exposure.get("description") or "",
        owner=owner.get("email") or owner.get("name"),
        file=file,
        request_fields=request_fields,
        on_demand=on_demand,
    )


def _evaluator_kind(data_type: str, dialect: str | None) -> str | None:
    """The on-demand evaluator's kind of a declared type (featsync.registry.types); None if it cannot use it."""
    try:
        kind = column_type(data_type, dialect).kind
    except TypeProblem:
        return None
    return kind if kind in EVALUATOR_KINDS else None


def _on_demand(
    spec: Mapping[str, Any],
    refs: list[FeatureRef],
    views: Mapping[str, FeatureView],
    problem: Callable[[str, str], None],
    dialect: str | None = None,
) -> tuple[tuple[RequestField, ...], tuple[OnDemandFeature, ...]]:
    """The service's request fields and compiled on-demand features; every invalid one is a problem."""
    fields: list[RequestField] = []
    raw_fields = spec.get("request_fields") or {}
    if not isinstance(raw_fields, Mapping):
        problem("request_fields", "must be a mapping of field name to {data_type: ..., description: ...}")
        raw_fields = {}
    feature_names = {ref.feature for ref in refs}
    for name, item in raw_fields.items():
        key = f"request_fields.{name}"
        item = {"data_type": item} if isinstance(item, str) else item
        if not isinstance(item, Mapping):
            problem(key, "must be a data type or a mapping with data_type")
            continue
        for unknown in sorted(set(item) - REQUEST_FIELD_KEYS):
            problem(f"{key}.{unknown}", f"unknown key; expected one of {', '.join(sorted(REQUEST_FIELD_KEYS))}")
        name_problem = column_problem(name)
        if name_problem:
            problem(key, f"request field name {name_problem}")
            continue
        data_type = str(item.get("data_type") or "").strip().lower()
        kind = _evaluator_kind(data_type, dialect) if data_type else None
        if kind is None:
            problem(
                f"{key}.data_type",
                f"{item.get('data_type')!r} is not supported; use bigint, float8, boolean, text or timestamp (or timestamptz)",
            )
            continue
        default = item.get("default")
        if default is not None and (default != "now" or kind != "timestamp"):
            problem(f"{key}.default", f"only a timestamp field may have a default, and only 'now'; got {default!r}")
        if name in feature_names:
            problem(key, f"'{name}' is also a feature of the service; request fields need names of their own")
            continue
        fields.append(RequestField(name, data_type, kind, str(item.get("description") or ""), default == "now"))
    columns = {}
    for ref in refs:
        kind = views[ref.feature_view].column(ref.feature).type.kind
        columns[ref.feature] = kind if kind in EVALUATOR_KINDS else None
    columns.update({f.name: f.kind for f in fields})
    features: list[OnDemandFeature] = []
    raw = spec.get("on_demand") or {}
    if not isinstance(raw, Mapping):
        problem("on_demand", "must be a mapping of feature name to {expression: ..., data_type: ...}")
        raw = {}
    for name, item in raw.items():
        key = f"on_demand.{name}"
        if not isinstance(item, Mapping):
            problem(key, "must be a mapping with expression and data_type")
            continue
        for unknown in sorted(set(item) - ON_DEMAND_KEYS):
            problem(f"{key}.{unknown}", f"unknown key; expected one of {', '.join(sorted(ON_DEMAND_KEYS))}")
        name_problem = column_problem(name)
        if name_problem:
            problem(key, f"on-demand feature name {name_problem}")
            continue
        if name in columns:
            problem(key, f"'{name}' is already a feature or request field of the service")
            continue
        output = _evaluator_kind(str(item.get("data_type") or ""), dialect)
        if output not in ("int", "float", "bool"):
            problem(f"{key}.data_type", f"{item.get('data_type')!r} is not supported; use bigint, float8 (double) or boolean")
            continue
        try:
            features.append(
                compile_feature(
                    name, item.get("expression"), item.get("data_type"), columns, str(item.get("description") or ""), output
                )
            )
        except ExpressionError as exc:
            problem(f"{key}.expression", f"{item.get('expression')!r}: {exc}")
    used = {i for f in features for i in f.inputs}
    for field_ in fields if len(features) == len(raw) else ():  # only once every expression compiled
        if field_.name not in used:
            problem(f"request_fields.{field_.name}", "is not used by any on-demand feature")
    return tuple(fields), tuple(features)


def _check_service_versions(services: Iterable[FeatureService], problems: list[Problem]) -> None:
    seen: dict[tuple[str, int], FeatureService] = {}
    for service in services:
        key = (service.name, service.version)
        if key in seen:
            problems.append(
                Problem(
                    service.file,
                    f"exposure '{service.exposure}'",
                    "feature_service.version",
                    f"{service.name} v{service.version} is also declared by exposure '{seen[key].exposure}'",
                )
            )
        seen[key] = service


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    return f"no {kind} named '{name}' (known: {', '.join(known) or 'none'})"
