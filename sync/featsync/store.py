"""FeatureStore: the Python entry point, shaped like Feast's so that Feast code runs unchanged.

Feast's calls are accepted as Feast writes them: `get_online_features(features, entity_rows)`
positionally, `features` as a list of references or a feature service (its name or object),
entity rows as a list of dicts or a dict of columns; `get_historical_features` returns a
RetrievalJob-like object with to_df() and to_arrow(). featsync's earlier keywords still work.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featsync.offline.training import TrainingSetRequest, get_historical_features, read_spine, to_utc_aware
from featsync.online.serving import OnlineReader, OnlineResponse
from featsync.project import Project
from featsync.registry import FeatureService, Registry


class RetrievalJob:
    """A training set, as Feast's RetrievalJob: to_df() (pandas) and to_arrow().

    It wraps the Arrow table the join returned; any other attribute is the table's
    (`num_rows`, `to_pandas()`, `select(...)`), so code written for the table keeps working.
    """

    def __init__(self, table: pa.Table):
        self._table = table

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_df(self) -> Any:
        return self._table.to_pandas()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def __len__(self) -> int:
        return self._table.num_rows


SQL_QUERY = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)  # an entity_df given as a query, as Feast takes it


def _is_rows(value: Any) -> bool:
    """Entity rows: a dict of columns, a DataFrame, or a list of dicts (an empty list counts)."""
    if isinstance(value, Mapping) or _is_frame(value):
        return True
    return isinstance(value, Sequence) and not isinstance(value, str) and (not value or isinstance(value[0], Mapping))


def _selection(features: Any, feature_service: str | None) -> tuple[list[str] | None, str | None]:
    """Feast's `features`: a list of references, or a feature service (name or FeatureService)."""
    if isinstance(features, FeatureService):
        return None, features.exposure
    if isinstance(features, str):
        if feature_service is not None:
            raise TypeError("give the feature service once: as features or as feature_service")
        return None, features
    return (None if features is None else list(features)), feature_service


def _is_frame(value: Any) -> bool:
    """A pandas DataFrame (duck-typed: pandas is not imported for it)."""
    return hasattr(value, "columns") and hasattr(value, "iloc")


def _rows(entity_rows: Any) -> list[Mapping[str, Any]]:
    """A dict of columns ({"user_id": [...]}, as Feast also takes) or a pandas DataFrame as a
    list of row dicts (a list of dicts as it is)."""
    if _is_frame(entity_rows):
        entity_rows = {name: entity_rows[name].tolist() for name in entity_rows.columns}
    if not isinstance(entity_rows, Mapping):
        rows = list(entity_rows)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"entity_rows[{i}] is a {type(row).__name__}; give a list of dicts, a dict of lists or a DataFrame"
                )
        return rows
    columns = {name: list(column) for name, column in entity_rows.items()}
    lengths = {len(column) for column in columns.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{name}: {len(column)}" for name, column in columns.items())
        raise ValueError(f"entity_rows columns have different lengths ({detail})")
    n = lengths.pop() if lengths else 0
    return [{name: column[i] for name, column in columns.items()} for i in range(n)]


class FeatureStore:
    """A featsync project (a dbt project) on one target.

    >>> store = FeatureStore(project_dir=".", target="dev")
    >>> table = store.get_historical_features(labels_df, feature_service="fraud_detection:v1")
    >>> df = table.to_pandas()
    """

    def __init__(
        self,
        project_dir: str | os.PathLike = ".",
        target: str | None = None,
        profiles_dir: str | os.PathLike | None = None,
        redis_url: str | None = None,
        key_prefix: str | None = None,
    ):
        self.project = Project.open(project_dir, profiles_dir, target)
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self._reader: OnlineReader | None = None
        self._ingest: Any = None  # featsync.online.ingest.RowIngest, made on the first push

    @property
    def registry(self) -> Registry:
        return self.project.registry()

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str | FeatureService | None = None,
        feature_service: str | None = None,
        spine_timestamp: str = "event_timestamp",
        join_key_map: Mapping[str, str] | None = None,
        full_feature_names: bool = False,
        as_of: str = "event",
    ) -> RetrievalJob:
        """Point-in-time correct features for every row of `entity_df`, via the dbt macro.

        `entity_df` is a pandas DataFrame or Arrow table whose timestamp column is
        UTC-aware, a path to a parquet/CSV file, or a relation / dbt model name (or a SQL
        query's relation) in the warehouse. `features` is a list of references or a feature
        service. Returns a RetrievalJob: ``.to_df()`` (pandas), ``.to_arrow()``; every spine
        row is kept, in no particular order.
        """
        features, feature_service = _selection(features, feature_service)
        request = TrainingSetRequest(
            features, feature_service, spine_timestamp, dict(join_key_map or {}), full_feature_names, as_of
        )
        if isinstance(entity_df, str) and SQL_QUERY.match(entity_df):
            from featsync.offline.warehouse import connect, warehouse_errors

            # The caller's own query (as Feast runs it), run as written; its naive timestamps mean UTC.
            with connect(self.project) as warehouse, warehouse_errors("cannot run the entity_df query"):
                entity_df = to_utc_aware(warehouse.fetch_arrow(entity_df))
        elif isinstance(entity_df, Path) or (isinstance(entity_df, str) and entity_df.lower().endswith((".csv", ".parquet"))):
            entity_df = read_spine(Path(entity_df), spine_timestamp)
        elif not isinstance(entity_df, (str, pa.Table)):
            entity_df = pa.Table.from_pandas(entity_df, preserve_index=False)
        return RetrievalJob(get_historical_features(self.project, entity_df, request))

    def get_online_features(
        self,
        features: Sequence[str] | str | FeatureService | None = None,
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        """The stored features of each entity row, in one Redis round trip.

        Feast's order: `features` (references, on-demand ones as '<service>:<feature>', or a
        feature service by name or object), then `entity_rows` (a list of dicts, or a dict of
        columns). featsync's earlier order, entity rows first, is still understood.
        Request fields of on-demand features may sit in the entity rows, as in Feast.

        Missing entities give None with status not_found; values past their TTL give None
        with status expired (checked again here, against the stored event time). A feature
        service's on-demand features are computed from the read values and `request_data`
        (field -> one value per entity row, or one value for all); with no on-demand feature
        requested it must be empty.
        """
        if _is_rows(features) and (entity_rows is None or not _is_rows(entity_rows)):
            features, entity_rows = entity_rows, features  # featsync's earlier positional order
        if entity_rows is None:
            raise TypeError("get_online_features needs entity_rows")
        features, feature_service = _selection(features, feature_service)
        if self._reader is None:
            from featsync.online.connections import redis_client

            self._reader = OnlineReader(self.registry, redis_client(self.project, self.redis_url), self.key_prefix)
        return self._reader.get(_rows(entity_rows), features, feature_service, full_feature_names, request_data)

    def push(self, feature_view: str, rows: Any, to: str = "online") -> Any:
        """Write rows of a feature view now, without the warehouse (Feast's `store.push`).

        `rows` is a pandas DataFrame, an Arrow table, a list of dicts or a dict of lists, with
        the view's entities, event timestamp and features (created_timestamp and valid_to
        optional). `to` is "online", "offline" or "online_and_offline". Every row is checked
        first (types, NULL keys, timestamps without a zone, the suite's row-level
        expectations): a FeatsyncError names the first bad row and column, and nothing is
        written. A float feature's NaN is NaN from every shape (docs/push-api.md, "NULL and
        NaN"). Online, an older row never replaces a newer one, whoever wrote it, and rows of
        one key at one event time are reduced by the point-in-time join's order
        (docs/push-api.md, "Equal event times"); offline, the rows land in the view's push log (durably,
        before this returns), which the view's SQL reads at the next `dbt build`. Returns a
        featsync.online.ingest.PushResult.
        """
        if self._ingest is None:
            from featsync.online.ingest import RowIngest

            client = None
            if to != "offline":
                from featsync.online.connections import redis_client

                client = redis_client(self.project, self.redis_url)
            self._ingest = RowIngest(self.project, client, self.key_prefix)
        elif to != "offline" and self._ingest.client is None:
            from featsync.online.connections import redis_client

            self._ingest.client = redis_client(self.project, self.redis_url)
        return self._ingest.push(feature_view, rows, to)
