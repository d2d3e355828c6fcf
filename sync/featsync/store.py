"""FeatureStore: the Python entry point, shaped like Feast's for familiarity."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featsync.offline.training import TrainingSetRequest, get_historical_features, read_spine
from featsync.online.serving import OnlineReader, OnlineResponse
from featsync.project import Project
from featsync.registry import Registry


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
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        spine_timestamp: str = "event_timestamp",
        join_key_map: Mapping[str, str] | None = None,
        full_feature_names: bool = False,
        as_of: str = "event",
    ) -> pa.Table:
        """Point-in-time correct features for every row of `entity_df`, via the dbt macro.

        `entity_df` is a pandas DataFrame or Arrow table whose timestamp column is
        UTC-aware, a path to a parquet/CSV file, or a relation / dbt model name in the
        warehouse. Returns an Arrow table (``.to_pandas()`` for pandas); every spine row
        is kept, in no particular order.
        """
        request = TrainingSetRequest(
            features, feature_service, spine_timestamp, dict(join_key_map or {}), full_feature_names, as_of
        )
        if isinstance(entity_df, Path) or (isinstance(entity_df, str) and entity_df.lower().endswith((".csv", ".parquet"))):
            entity_df = read_spine(Path(entity_df), spine_timestamp)
        elif not isinstance(entity_df, (str, pa.Table)):
            entity_df = pa.Table.from_pandas(entity_df, preserve_index=False)
        return get_historical_features(self.project, entity_df, request)

    def get_online_features(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
    ) -> OnlineResponse:
        """The stored features of each entity row, in one Redis round trip.

        Missing entities give None with status not_found; values past their TTL give None
        with status expired (checked again here, against the stored event time). A feature
        service's on-demand features are computed from the read values and `request_data`
        (field -> one value per entity row, or one value for all); with no on-demand feature
        requested it must be empty.
        """
        if self._reader is None:
            from featsync.online.connections import redis_client

            self._reader = OnlineReader(self.registry, redis_client(self.project, self.redis_url), self.key_prefix)
        return self._reader.get(entity_rows, features, feature_service, full_feature_names, request_data)

    def push(self, feature_view: str, rows: Any, to: str = "online") -> Any:
        """Write rows of a feature view now, without the warehouse (Feast's `store.push`).

        `rows` is a pandas DataFrame, an Arrow table, a list of dicts or a dict of lists, with
        the view's entities, event timestamp and features (created_timestamp and valid_to
        optional). `to` is "online", "offline" or "online_and_offline". Every row is checked
        first (types, NULL keys, the suite's row-level expectations): a FeatsyncError names the
        first bad row and column, and nothing is written. Online, an older row never replaces
        a newer one, whoever wrote it; offline, the rows land in the view's push log (durably,
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
