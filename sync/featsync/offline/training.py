"""Ad-hoc training sets: the same featsync.point_in_time_join macro, run through dbt.

There is no second implementation here. A spine from a file or DataFrame is loaded into
a scratch table, dbt compiles the macro against it, and the warehouse runs the SQL. The
only work done in Python is at the edges: UTC checks on the way in, UTC zones on the
timestamps on the way out.
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
from featsync.offline.warehouse import connect, profile_credentials, relation_name
from featsync.project import Project
from featsync.registry import require_one_selection


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
        # These names become SQL identifiers in the macro's output: plain ones only.
        _require_column(self.spine_timestamp, "the spine timestamp")
        for key, column in self.join_key_map.items():
            _require_column(key, "a join key")
            _require_column(column, f"the spine column of join key '{key}'")

    def inline_sql(self, spine_relation: str, feature_views: Sequence[str]) -> str:
        """The Jinja of featsync.point_in_time_join for this request, with depends_on hints.

        dbt's graph is empty while it parses, so the views a service uses are declared
        up front, exactly as a training-set model does with `-- depends_on:` lines.
        """
        hints = "".join(f"-- depends_on: {{{{ ref('{view}') }}}}\n" for view in feature_views)
        args = {
            "spine": spine_relation,
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


_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RELATION_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_RELATION = re.compile(rf"{_RELATION_PART}(?:\.{_RELATION_PART}){{0,2}}\Z")


def _require_column(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise FeatsyncError(f"{what} {name!r} is not a plain column name (letters, digits and underscores)")


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
    """A spine from parquet or CSV. CSV timestamps need a zone (e.g. 2024-03-01T10:00:00Z)."""
    if not path.is_file():
        raise FeatsyncError(f"spine file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path)
    if path.suffix.lower() == ".csv":
        # An empty CSV field is a missing value (NULL key), not an empty string.
        # The spine timestamp is read as UTC-aware whatever its values (even all empty);
        # a value without a zone is an error from the CSV reader, naming the column.
        options = pacsv.ConvertOptions(strings_can_be_null=True, column_types={spine_timestamp: pa.timestamp("us", tz="UTC")})
        try:
            return pacsv.read_csv(path, convert_options=options)
        except pa.ArrowInvalid as exc:
            raise FeatsyncError(f"cannot read spine {path}: {exc}. Timestamps need a zone, e.g. 2024-03-01T10:00:00Z") from exc
    raise FeatsyncError(f"spine file {path} is neither .parquet nor .csv")


def to_utc_naive(spine: pa.Table, spine_timestamp: str) -> pa.Table:
    """Check the spine timestamp and store every zoned timestamp as naive UTC, as the warehouse does."""
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
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            column = pc.cast(column, pa.timestamp(f.type.unit, tz="UTC")).cast(pa.timestamp(f.type.unit))
        columns.append(column)
    return pa.table(columns, names=spine.column_names)


def to_utc_aware(table: pa.Table) -> pa.Table:
    """Naive warehouse timestamps mean UTC: say so in the Arrow types."""
    columns = []
    for f, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            column = column.cast(pa.timestamp(f.type.unit, tz="UTC"))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def compile_join(project: Project, request: TrainingSetRequest, spine_relation: str) -> str:
    """The SQL of the macro for this request, compiled by dbt in-process."""
    # Validates the declarations and the request before dbt runs anything.
    views = list(project.registry().resolve_features(request.features, request.feature_service))
    inline = request.inline_sql(spine_relation, views)
    result = project.run_dbt(["compile", "--inline", inline], target_path=project.target_path)
    return result.result.results[0].node.compiled_code


def get_historical_features(project: Project, spine: pa.Table | str, request: TrainingSetRequest) -> pa.Table:
    """A point-in-time correct training set as an Arrow table with UTC-aware timestamps.

    `spine` is an Arrow table (timestamps must carry a zone) or the name of a relation in
    the warehouse: a dbt model name or a qualified relation.
    """
    if isinstance(spine, str):
        model = next(
            (
                n
                for n in project.registry().manifest["nodes"].values()
                if n.get("name") == spine and n.get("resource_type") in ("model", "seed", "snapshot")
            ),
            None,
        )
        relation = model["relation_name"] if model else require_relation(spine)
        sql = compile_join(project, request, relation)
        with connect(project) as warehouse:
            return to_utc_aware(warehouse.fetch_arrow(sql))
    spine = to_utc_naive(spine, request.spine_timestamp)
    # The spine goes into a scratch table named up front: dbt compiles against its name
    # before featsync opens its own connection (DuckDB allows one per file at a time).
    name = f"featsync_spine_{uuid.uuid4().hex[:12]}"
    credentials = profile_credentials(project)
    sql = compile_join(project, request, relation_name(credentials.schema, name, credentials.type))
    with connect(project, credentials) as warehouse:
        warehouse.create_table(name, spine)
        try:
            return to_utc_aware(warehouse.fetch_arrow(sql))
        finally:
            warehouse.drop_table(warehouse.relation(name))
