"""The fraud example's streaming view (models/streaming, part of the example):
a row pushed with to=online_and_offline is served online at once and, after `dbt build`, is in
fraud_training_set_v3 with the value that was served. Real DuckDB, Redis and dbt."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime

import duckdb
import redis

from conftest import copy_project
from featsync.store import FeatureStore
from test_push_rows import cleanup

# Like `make demo`: the example data shifted to end yesterday, so its 90-day ttls still hold.
SHIFT = (datetime.now(UTC).date() - date(2024, 4, 30)).days
VARS = ["--vars", json.dumps({"featsync_example_shift_days": SHIFT})]


def test_streamed_rows_are_served_and_in_the_training_set(tmp_path, monkeypatch, redis_url):
    database = tmp_path / "example.duckdb"
    monkeypatch.setenv("FEATSYNC_DUCKDB_PATH", str(database))
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    root = copy_project(tmp_path / "project")
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    store = FeatureStore(root, "dev", root, redis_url=redis_url, key_prefix=prefix)
    build = ["build", "--select", "+fraud_training_set_v3", *VARS]
    store.project.run_dbt(build, target_path=tmp_path / "target")
    try:
        with duckdb.connect(str(database), read_only=True) as con:
            transaction_id, user_id, at = con.execute(
                "select transaction_id, user_id, event_timestamp from stg_fraud_labels order by event_timestamp desc limit 1"
            ).fetchone()
        # The stream processor's row for that transaction, at the label's instant.
        row = {
            "user_id": user_id,
            "event_timestamp": at.replace(tzinfo=UTC),
            "last_amount": 12345.5,
            "last_merchant_id": "m-stream",
        }
        result = store.push("user_last_transaction", [row], "online_and_offline")
        assert result.online.keys_written == 1 and result.offline_file
        online = store.get_online_features([{"user_id": user_id}], ["user_last_transaction:last_amount"])
        assert online.features["last_amount"] == [12345.5]

        store.project.run_dbt(["build", "--select", "user_last_transaction", "fraud_training_set_v3", *VARS])
        with duckdb.connect(str(database), read_only=True) as con:
            trained = con.execute(
                "select last_amount, last_merchant_id from fraud_training_set_v3 where transaction_id = ?", [transaction_id]
            ).fetchall()
        assert trained == [(12345.5, "m-stream")]
    finally:
        cleanup(store.project, redis.Redis.from_url(redis_url), prefix)
