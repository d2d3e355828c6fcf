"""Ad-hoc training sets: the same featsync.point_in_time_join macro, run through dbt.

There is no second implementation here. A spine from a file or DataFrame is loaded into
a scratch table, dbt compiles the macro against it, and the warehouse runs the SQL. The
only work done in Python is at the edges: checks of the spine on the way in (its time
column, the entity keys and their types, names that would collide with features), its
zoned times stored as naive UTC, and on the way out the spine's own column types back
(unit and zone) and UTC zones on the feature timestamps.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from featsync.errors import FeatsyncError
from featsync.offline.warehouse import connect, profile_credentials, relation_name, warehouse_errors
from featsync.progress import Progress, silent
from featsync.project import Project
from featsync.registry import Registry, output_name, require_one_selection
from featsync.registry.identifiers import RESERVED_PREFIX, column_problem
from featsync.registry.types import INT, TEXT
from featsync.times import parse_time, parse_times


@dataclass(frozen=True)
class TrainingSetRequest:
    """What to join: features or a service, and how the spine lines up with the views."""

    features: Sequence[str] | None = None
    feature_service: str | None = None
    spine_timestamp: str = "event_timestamp"
    join_key_map: Mapping[str, str] = field(default_factory=dict)
    full_feature_names: bool = False
    as_of: str = "event"

    def __post_init__(self) -> None:
        require_one_selection(self.features, self.feature_service)
        if self.as_of not in ("event", "available"):
            raise FeatsyncError(f"as_of must be 'event' or 'available', got {self.as_of!r}")
        # These names become SQL identifiers in the macro's output: plain ones only
        # (featsync.registry.identifiers, the rule the macros apply too).
        _require_column(self.spine_timestamp, "the spine timestamp")
        for key, column in self.join_key_map.items():
            _require_column(key, "a join key")
            _require_column(column, f"the spine column of join key '{key}'")

    def inline_sql(self, spine_relation: str, feature_views: Sequence[str], spine_types: Mapping[str, str]) -> str:
        """The Jinja of featsync.point_in_time_join for this request, with depends_on hints.

        dbt's graph is empty while it parses, so the views a service uses are declared
        up front, exactly as a training-set model does with `-- depends_on:` lines.
        """
        hints = "".join(f"-- depends_on: {{{{ ref('{view}') }}}}\n" for view in feature_views)
        args = {
            "spine": spine_relation,
            "spine_types": dict(spine_types),
            "spine_timestamp": self.spine_timestamp,
            "join_key_map": dict(self.join_key_map),
            "full_feature_names": self.full_feature_names,
            "as_of": self.as_of,
        }
        if self.features:
            args["features"] = list(self.features)
        else:
            args["feature_service"] = self.feature_service
        # JSON literals are valid Jinja literals except for booleans and null.
        rendered = ", ".join(f"{k}={_jinja(v)}" for k, v in args.items())
        return f"{hints}{{{{ featsync.point_in_time_join({rendered}) }}}}"


_RELATION_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_RELATION = re.compile(rf"{_RELATION_PART}(?:\.{_RELATION_PART}){{0,2}}\Z")


def _require_column(name: Any, what: str) -> None:
    problem = column_problem(name)
    if problem:
        raise FeatsyncError(f"{what} {name!r} is not a plain column name: {problem}")


def require_relation(name: str) -> str:
    """A spine relation given by name: [database.][schema.]table, each part a plain or a
    double-quoted identifier; anything else would be SQL text, not a name."""
    if not _RELATION.match(name):
        raise FeatsyncError(f"spine {name!r} is neither a .parquet or .csv file nor a relation name ([database.][schema.]table)")
    return name


def _jinja(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def read_spine(path: Path, spine_timestamp: str = "event_timestamp") -> pa.Table:
    """A spine from parquet or CSV. A CSV's time column is text read by featsync's one rule
    for times given as text (featsync.times: RFC 3339 with a zone, e.g. 2024-03-01T10:00:00Z).

    A CSV with a header and no rows is an empty spine (its columns typed later, from the
    entities they hold); an unreadable file is a FeatsyncError naming it.
    """
    if not path.is_file():
        raise FeatsyncError(f"spine file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        try:
            _require_unique(pq.read_schema(path).names)  # before Arrow's reader fails on it, less clearly
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise FeatsyncError(f"cannot read spine {path}: not a readable parquet file ({exc})") from None
    if path.suffix.lower() == ".csv":
        # An empty CSV field is a missing value (NULL key), not an empty string.
        options = pacsv.ConvertOptions(strings_can_be_null=True, column_types={spine_timestamp: pa.string()})
        try:
            table = pacsv.read_csv(path, convert_options=options)
        except (pa.ArrowException, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FeatsyncError(f"cannot read spine {path}: {reason}") from None
        _require_unique(table.column_names)
        if spine_timestamp not in table.column_names:
            return table  # check_spine names the missing column
        return table.set_column(
            table.column_names.index(spine_timestamp), spine_timestamp, _csv_times(path, spine_timestamp, table[spine_timestamp])
        )
    raise FeatsyncError(f"spine file {path} is neither .parquet nor .csv")


def _csv_times(path: Path, column: str, texts: pa.ChunkedArray) -> pa.ChunkedArray:
    """The CSV's time column as UTC instants (UTC-aware even when every field is empty);
    the first value that is not one is named with its row and why."""
    try:
        return parse_times(texts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
        pass
    for row, text in enumerate(texts.to_pylist(), 1):
        if text is not None:
            parse_time(text, f"spine {path}, column '{column}', row {row}")  # raises, saying why
    raise FeatsyncError(f"spine {path}, column '{column}': not RFC 3339 times with a zone")


def _require_unique(names: Sequence[str]) -> None:
    """A spine column held twice has no one type or value to join on (Arrow's lookup by name fails)."""
    for name in names:
        if names.count(name) > 1:
            raise FeatsyncError(f"spine column '{name}' appears twice; rename or drop one")


def check_spine(registry: Registry, schema: pa.Schema, request: TrainingSetRequest) -> dict[str, str]:
    """What the join needs of a spine, checked before any SQL runs: the time column (a timestamp),
    every entity key of the requested views under its (mapped) name with a type that can equal
    the entity's, and no column named like an output feature (the result would hold two).
    Returns the kind (int or text) of each spine key column."""
    names = schema.names
    _require_unique(names)
    for name in names:  # as the macro's _check_spine says it for dbt models
        if name.lower().startswith(RESERVED_PREFIX):
            raise FeatsyncError(
                f"the spine has a column '{name}'; names starting with '{RESERVED_PREFIX}' are reserved "
                "for the columns featsync's SQL adds, rename it"
            )
    listed = ", ".join(names) or "none"
    if request.spine_timestamp not in names:
        raise FeatsyncError(f"the spine has no column '{request.spine_timestamp}' (columns: {listed})")
    kind = schema.field(request.spine_timestamp).type
    if not (pa.types.is_timestamp(kind) or pa.types.is_null(kind)):
        raise FeatsyncError(f"spine column '{request.spine_timestamp}' must be a timestamp, got {kind}")
    by_view = registry.resolve_features(request.features, request.feature_service)
    joined = list(dict.fromkeys(e for name in by_view for e in registry.feature_view(name).entities))
    for key in request.join_key_map:  # as the macro's _pit_plan says it for dbt models
        if key not in joined:
            raise FeatsyncError(
                f"join_key_map names '{key}', which is not an entity of the requested feature views "
                f"(entities: {', '.join(joined)})"
            )
    keys: dict[str, str] = {}
    for view_name, features in by_view.items():
        view = registry.feature_view(view_name)
        for entity in view.entities:
            column = request.join_key_map.get(entity, entity)
            if column not in names:
                raise FeatsyncError(
                    f"the spine has no column '{column}' for entity '{entity}' of feature view '{view_name}' "
                    f"(columns: {listed}); add it, or map the entity to a spine column with join_key_map"
                )
            expected = keys[column] = view.column(entity).type.kind
            actual = schema.field(column).type
            if not _key_fits(actual, expected):
                raise FeatsyncError(
                    f"spine column '{column}' is {actual}, but entity '{entity}' of feature view '{view_name}' is "
                    f"{view.column(entity).data_type} ({'an integer' if expected == INT else 'text'}); cast the spine column"
                )
        for feature in features:
            output = output_name(view_name, feature, request.full_feature_names)
            if output in names:
                raise FeatsyncError(
                    f"the spine has a column '{output}', the name of feature '{view_name}:{feature}' in the training set; "
                    "rename the spine column, or ask for full feature names"
                )
    if request.feature_service:
        for feature in registry.service(request.feature_service).on_demand:
            if feature.name in names:
                raise FeatsyncError(
                    f"the spine has a column '{feature.name}', the name of on-demand feature '{feature.name}'; rename it"
                )
    return keys


def _key_fits(actual: pa.DataType, expected: str) -> bool:
    """Can spine values of Arrow type `actual` equal entity keys of kind `expected`? (A column with
    no values at all, e.g. from a header-only CSV, fits anything.)"""
    if pa.types.is_null(actual):
        return True
    if expected == TEXT:
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    return pa.types.is_integer(actual) or (pa.types.is_decimal(actual) and actual.scale == 0)


# Engines whose timestamps hold microseconds at most, by adapter type: their names in messages.
MICROSECOND_ENGINES = {"postgres": "PostgreSQL", "spark": "Spark"}


def to_utc_naive(
    spine: pa.Table, spine_timestamp: str, adapter_type: str = "duckdb", keys: Mapping[str, str] | None = None
) -> pa.Table:
    """Check the spine timestamp and store every zoned timestamp as naive UTC, as the warehouse does.

    Columns without any value (a header-only CSV) get a type the warehouse can store: their
    entity's (`keys`: column -> int or text), else text.
    Units are kept (DuckDB and Snowflake keep nanoseconds); PostgreSQL and Spark keep
    microseconds, so there a spine time with nanoseconds is refused rather than rounded, which would move
    TTL bounds by up to a microsecond.
    """
    if spine_timestamp not in spine.column_names:
        raise FeatsyncError(f"the spine has no column '{spine_timestamp}' (columns: {', '.join(spine.column_names)})")
    kind = spine.schema.field(spine_timestamp).type
    if not pa.types.is_timestamp(kind):
        raise FeatsyncError(f"spine column '{spine_timestamp}' must be a timestamp, got {kind}")
    if kind.tz is None:
        raise FeatsyncError(
            f"spine column '{spine_timestamp}' holds naive timestamps; featsync needs UTC-aware ones "
            "(e.g. 2024-03-01T10:00:00Z in CSV, or pandas' tz_localize('UTC'))"
        )
    columns = []
    for f, column in zip(spine.schema, spine.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            column = pc.cast(column, pa.timestamp(f.type.unit, tz="UTC")).cast(pa.timestamp(f.type.unit))
            if f.type.unit == "ns" and adapter_type in MICROSECOND_ENGINES:
                try:
                    column = column.cast(pa.timestamp("us"))
                except pa.ArrowInvalid:
                    raise FeatsyncError(
                        f"spine column '{f.name}' has nanoseconds, which {MICROSECOND_ENGINES[adapter_type]} does not keep; "
                        "round it to microseconds first"
                    ) from None
        elif pa.types.is_null(f.type):
            column = column.cast(pa.int64() if (keys or {}).get(f.name) == INT else pa.string())
        columns.append(column)
    return pa.table(columns, names=spine.column_names)


def spine_types(schema: pa.Schema) -> dict[str, str]:
    """The spine's column types as the macro needs them: which timestamps are zoned."""
    out = {}
    for f in schema:
        if pa.types.is_timestamp(f.type):
            out[f.name] = "timestamptz" if f.type.tz is not None else "timestamp"
        else:
            out[f.name] = str(f.type)
    return out


def to_utc_aware(table: pa.Table, spine: pa.Schema | None = None) -> pa.Table:
    """Timestamps as UTC-aware Arrow (naive warehouse timestamps mean UTC), and the spine's own
    columns (`spine`: its schema as given) back in their own types: unit and zone included."""
    columns = []
    for f, column in zip(table.schema, table.columns, strict=True):
        original = spine.field(f.name).type if spine is not None and f.name in spine.names else None
        if pa.types.is_timestamp(f.type):
            column = column.cast(pa.timestamp(f.type.unit, tz="UTC"))
        if original is not None and original != column.type:
            try:
                column = column.cast(original)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # a type the warehouse widened beyond what converts back exactly: keep its own
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def compile_join(project: Project, request: TrainingSetRequest, spine_relation: str, types: Mapping[str, str]) -> str:
    """The SQL of the macro for this request, compiled by dbt in-process."""
    # Validates the declarations and the request before dbt runs anything.
    views = list(project.registry().resolve_features(request.features, request.feature_service))
    inline = request.inline_sql(spine_relation, views, types)
    result = project.run_dbt(["compile", "--inline", inline], target_path=project.target_path)
    return result.result.results[0].node.compiled_code


def get_historical_features(
    project: Project, spine: pa.Table | str, request: TrainingSetRequest, progress: Progress = silent
) -> pa.Table:
    """A point-in-time correct training set as an Arrow table with UTC-aware timestamps.

    `spine` is an Arrow table (timestamps must carry a zone) or the name of a relation in
    the warehouse: a dbt model name or a qualified relation. The spine's columns keep their
    types (an Arrow spine's units and zones included); feature timestamps are UTC-aware.
    """
    registry = project.registry()
    if isinstance(spine, str):
        model = next(
            (
                n
                for n in registry.manifest["nodes"].values()
                if n.get("name") == spine and n.get("resource_type") in ("model", "seed", "snapshot")
            ),
            None,
        )
        relation = model["relation_name"] if model else require_relation(spine)
        with connect(project) as warehouse, warehouse_errors(f"cannot read the spine {relation}"):
            schema = warehouse.fetch_arrow(f"select * from {relation} where 1 = 0").schema
        check_spine(registry, schema, request)
        progress("compiling the point-in-time join (dbt)", 0, 2)
        sql = compile_join(project, request, relation, spine_types(schema))
        progress("joining in the warehouse", 1, 2)
        with connect(project) as warehouse, warehouse_errors("the training-set query failed"):
            return _unique_columns(to_utc_aware(warehouse.fetch_arrow(sql)))
    keys = check_spine(registry, spine.schema, request)
    credentials = profile_credentials(project)
    loaded = to_utc_naive(spine, request.spine_timestamp, credentials.type, keys)
    # The spine goes into a scratch table named up front: dbt compiles against its name
    # before featsync opens its own connection (DuckDB allows one per file at a time).
    name = f"featsync_spine_{uuid.uuid4().hex[:12]}"
    progress("compiling the point-in-time join (dbt)", 0, 3)
    sql = compile_join(project, request, relation_name(credentials.schema, name, credentials.type), spine_types(loaded.schema))
    with connect(project, credentials) as warehouse:
        progress(f"loading the spine ({loaded.num_rows:,} rows)", 1, 3)
        with warehouse_errors("cannot load the spine into the warehouse"):
            warehouse.create_table(name, loaded)
        try:
            progress("joining in the warehouse", 2, 3)
            with warehouse_errors("the training-set query failed"):
                result = warehouse.fetch_arrow(sql)
            return _unique_columns(to_utc_aware(result, spine.schema))
        finally:
            warehouse.drop_table(warehouse.relation(name))


def _unique_columns(table: pa.Table) -> pa.Table:
    """The last guard: a parquet file with two columns of one name cannot be read back."""
    seen: set[str] = set()
    for name in table.column_names:
        if name in seen:
            raise FeatsyncError(f"the training set would have two columns named '{name}'; rename the spine's")
        seen.add(name)
    return table
