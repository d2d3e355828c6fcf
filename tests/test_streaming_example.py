"""The fraud example's streaming view (models/streaming, part of the example):
a row pushed with to=online_and_offline is served online at once and, after `dbt build`, is in
fraud_training_set_v3 with the value that was served. Real DuckDB, Redis and dbt."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import redis

from conftest import copy_project
from featsync.store import FeatureStore
from test_push_rows import cleanup

# Like `make demo`: the example data shifted to end yesterday, so its 90-day ttls still hold.
SHIFT = (datetime.now(UTC).date() - date(2024, 4, 30)).days
VARS = ["--vars", json.dumps({"featsync_example_shift_days": SHIFT})]


@pytest.fixture(scope="module")
def example(tmp_path_factory, redis_url) -> Iterator[tuple[FeatureStore, Path, Path]]:
    """The example built once for this module (up to fraud_training_set_v3), on a DuckDB file and
    a push log of its own: (store, database, dbt target path)."""
    tmp_path = tmp_path_factory.mktemp("streaming")
    database = tmp_path / "example.duckdb"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("FEATSYNC_DUCKDB_PATH", str(database))
        monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
        root = copy_project(tmp_path / "project")
        prefix = f"fs-rows:streaming-{uuid.uuid4().hex[:8]}"
        store = FeatureStore(root, "dev", root, redis_url=redis_url, key_prefix=prefix)
        target = tmp_path / "target"
        store.project.run_dbt(["build", "--select", "+fraud_training_set_v3", *VARS], target_path=target)
        try:
            yield store, database, target
        finally:
            cleanup(store.project, redis.Redis.from_url(redis_url), prefix)


def test_streamed_rows_are_served_and_in_the_training_set(example):
    store, database, target = example
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

    store.project.run_dbt(["build", "--select", "user_last_transaction", "fraud_training_set_v3", *VARS], target_path=target)
    with duckdb.connect(str(database), read_only=True) as con:
        trained = con.execute(
            "select last_amount, last_merchant_id from fraud_training_set_v3 where transaction_id = ?", [transaction_id]
        ).fetchall()
    assert trained == [(12345.5, "m-stream")]


def test_equal_event_times_train_on_what_was_served(example):
    """Rows of one user at one event time, pushed with to=online_and_offline in one request or
    in several: after the next build the model holds the row the online store served
    (docs/push-api.md, "Equal event times"). The model used to keep the smallest merchant, the
    push the last row given: m-b trained, m-z served."""
    store, database, target = example
    at = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    tag = uuid.uuid4().hex[:6]

    def row(user: str, amount: float, merchant: str) -> dict:
        return {"user_id": f"{user}-{tag}", "event_timestamp": at, "last_amount": amount, "last_merchant_id": merchant}

    requests = {
        "one request": [[row("one", 10.0, "m-b"), row("one", 10.0, "m-z")]],  # the greatest merchant (bytewise)
        "one request, amounts": [[row("amounts", 20.0, "m-a"), row("amounts", 10.0, "m-z")]],  # the greatest amount first
        "two requests": [[row("two", 10.0, "m-z")], [row("two", 10.0, "m-b")]],  # the later write
        "two requests, up": [[row("up", 10.0, "m-b")], [row("up", 10.0, "m-z")]],
    }
    for pushes in requests.values():
        for rows in pushes:
            store.push("user_last_transaction", rows, "online_and_offline")
    users = [pushes[0][0]["user_id"] for pushes in requests.values()]
    features = ["user_last_transaction:last_amount", "user_last_transaction:last_merchant_id"]
    online = store.get_online_features([{"user_id": u} for u in users], features)
    served = dict(zip(users, zip(online.features["last_amount"], online.features["last_merchant_id"], strict=True), strict=True))
    assert list(served.values()) == [(10.0, "m-z"), (20.0, "m-a"), (10.0, "m-b"), (10.0, "m-z")]

    store.project.run_dbt(["build", "--select", "user_last_transaction", *VARS], target_path=target)
    with duckdb.connect(str(database), read_only=True) as con:
        trained = con.execute(
            "select user_id, last_amount, last_merchant_id from user_last_transaction where user_id like ?", [f"%-{tag}"]
        ).fetchall()
    assert {user: (amount, merchant) for user, amount, merchant in trained} == served
