"""The offline push log against real DuckDB and PostgreSQL, and the Snowflake emulator
(tests/snowflake_emulator): rows pushed with to=online_and_offline are served online at once,
and after `dbt build` the view (its model unions featsync.push_log with its batch source) and a
training set see exactly those values: no training/serving skew."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from conftest import PACKAGE
from featsync.errors import FeatsyncError
from featsync.store import FeatureStore
from test_push_rows import cleanup

PROFILES = """
push_log_project:
  target: duckdb
  outputs:
    duckdb:
      type: duckdb
      path: "{{ env_var('FEATSYNC_PUSHLOG_DUCKDB_PATH') }}"
      schema: main
      threads: 1
      settings:
        TimeZone: UTC
    postgres:
      type: postgres
      host: "{{ env_var('FEATSYNC_PG_HOST', '127.0.0.1') }}"
      port: "{{ env_var('FEATSYNC_PG_PORT', '5432') | as_number }}"
      user: "{{ env_var('FEATSYNC_PG_USER', 'postgres') }}"
      password: ""
      dbname: "{{ env_var('FEATSYNC_PG_DATABASE', 'test') }}"
      schema: "{{ env_var('FEATSYNC_PUSHLOG_PG_SCHEMA', 'featsync_pushlog') }}"
      threads: 1
    snowflake:  # the emulator (tests/snowflake_emulator/profiles.yml)
      type: snowflake
      account: emulated
      user: featsync
      password: emulated
      warehouse: EMULATED
      database: FEATSYNC
      schema: "{{ env_var('FEATSYNC_PUSHLOG_SF_SCHEMA', 'FEATSYNC_PUSHLOG') }}"
      threads: 1
      client_session_keep_alive: false
      host: 127.0.0.1
      port: "{{ env_var('FEATSYNC_SNOWFLAKE_EMULATOR_PORT', '0') | as_number }}"
      protocol: http
      connect_retries: 0
"""
PROJECT = """
name: push_log_project
version: "1.0.0"
config-version: 2
profile: push_log_project
models:
  push_log_project:
    +materialized: table
"""
BATCH = """
select 'u1' as user_id, cast('2024-01-01 10:00:00' as timestamp) as event_timestamp, cast(1.5 as double precision) as last_amount
union all
select 'u2', cast('2024-01-01 11:00:00' as timestamp), cast(2.5 as double precision)
"""
# The streaming counterpart of a batch view: its batch rows and the push log, one row per
# (user, event time), the logged one first (it is what was served).
VIEW = """
select user_id, event_timestamp, last_amount from (
  select *, row_number() over (partition by user_id, event_timestamp order by from_log desc) as pick
  from (
    select user_id, event_timestamp, last_amount, 0 as from_log from {{ ref('transactions') }}
    union all
    select user_id, event_timestamp, last_amount, 1 as from_log from (
      {{ featsync.push_log('user_last_amount',
           {'user_id': 'text', 'event_timestamp': 'timestamp', 'last_amount': 'double precision'}) }}
    ) as pushed
  ) as unioned
) as deduplicated
where pick = 1
"""
YAML = """
models:
  - name: user_last_amount
    config:
      meta:
        feature_view: {entities: [user_id], timestamp: event_timestamp, online: true}
    columns:
      - {name: user_id, data_type: text}
      - {name: event_timestamp, data_type: timestamp}
      - {name: last_amount, data_type: double precision}
"""


def make_project(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(PROJECT)
    (root / "profiles.yml").write_text(PROFILES)
    (root / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n")
    (root / "models" / "transactions.sql").write_text(BATCH)
    (root / "models" / "user_last_amount.sql").write_text(VIEW)
    (root / "models" / "user_last_amount.yml").write_text(YAML)
    return root


@pytest.fixture(scope="module")
def snowflake_emulator() -> Iterator[int]:
    from snowflake_emulator import serve

    with serve() as port:
        yield port


@pytest.fixture(params=["duckdb", "postgres", "snowflake"])
def store(request, tmp_path, monkeypatch, redis_url):
    target = request.param
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    monkeypatch.setenv("FEATSYNC_PUSHLOG_DUCKDB_PATH", str(tmp_path / "pushlog.duckdb"))
    schema = f"featsync_pushlog_{uuid.uuid4().hex[:8]}"
    if target == "postgres":
        pg_dsn = request.getfixturevalue("pg_dsn")
        monkeypatch.setenv("FEATSYNC_PUSHLOG_PG_SCHEMA", schema)
    if target == "snowflake":  # a fresh schema of the in-process emulator, dropped with it
        monkeypatch.setenv("FEATSYNC_SNOWFLAKE_EMULATOR_PORT", str(request.getfixturevalue("snowflake_emulator")))
        monkeypatch.setenv("FEATSYNC_PUSHLOG_SF_SCHEMA", schema.upper())
    root = make_project(tmp_path / "project")
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    store = FeatureStore(root, target, root, redis_url=redis_url, key_prefix=prefix)
    store.project.run_dbt(["deps"])
    store.project.run_dbt(["build"])
    yield store
    cleanup(store.project, redis.Redis.from_url(redis_url), prefix)
    if target == "postgres":
        import psycopg2

        with psycopg2.connect(**pg_dsn) as con, con.cursor() as cur:
            cur.execute(f'drop schema if exists "{schema}" cascade')


def model_rows(store: FeatureStore) -> list[tuple]:
    from featsync.offline.warehouse import connect

    with connect(store.project) as warehouse:
        table = warehouse.fetch_arrow(f"select * from {warehouse.relation('user_last_amount')} order by user_id, event_timestamp")
    return [(r["user_id"], r["event_timestamp"], r["last_amount"]) for r in table.to_pylist()]


def test_pushed_rows_are_served_now_and_trained_on_after_the_build(store):
    t = datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
    result = store.push("user_last_amount", [{"user_id": "u1", "event_timestamp": t, "last_amount": 42.0}], "online_and_offline")
    assert result.offline_file and result.online.keys_written == 1
    # Served online at once (the key has no ttl: it never expires).
    online = store.get_online_features([{"user_id": "u1"}], ["user_last_amount:last_amount"])
    assert online.features["last_amount"] == [42.0]
    # Offline only: in the log, not online.
    later = t + timedelta(hours=1)
    store.push("user_last_amount", {"user_id": ["u3"], "event_timestamp": [later], "last_amount": [7.0]}, "offline")
    assert store.get_online_features([{"user_id": "u3"}], ["user_last_amount:last_amount"]).features["last_amount"] == [None]
    store.project.run_dbt(["build"])
    naive = t.replace(tzinfo=None)
    assert model_rows(store) == [
        ("u1", datetime(2024, 1, 1, 10), 1.5),
        ("u1", naive, 42.0),
        ("u2", datetime(2024, 1, 1, 11), 2.5),
        ("u3", later.replace(tzinfo=None), 7.0),
    ]
    spine = pa.table(
        {
            "user_id": ["u1", "u1", "u3"],
            "event_timestamp": pa.array([t - timedelta(minutes=1), t + timedelta(minutes=1), later], pa.timestamp("us", "UTC")),
        }
    )
    training = store.get_historical_features(spine, ["user_last_amount:last_amount"]).to_pylist()
    got = sorted((r["user_id"], r["event_timestamp"], r["last_amount"]) for r in training)
    assert [amount for *_, amount in got] == [1.5, 42.0, 7.0]  # before the push, the served value, the logged one


def test_a_refused_push_logs_nothing(store, tmp_path):
    bad = [{"user_id": "u9", "event_timestamp": datetime(2024, 1, 3, tzinfo=UTC), "last_amount": "x"}]
    with pytest.raises(FeatsyncError, match="row 0, column 'last_amount'"):
        store.push("user_last_amount", bad, "online_and_offline")
    store.project.run_dbt(["build"])
    assert [r[0] for r in model_rows(store)] == ["u1", "u2"]


def test_a_nul_is_refused_before_the_postgres_log_is_written(pit_postgres, redis_url):
    """PostgreSQL's text cannot hold a NUL: FeatureStore.push refuses one in a text feature or
    an entity key naming the row and column, before anything is written (it used to fail in
    the log's COPY, naming neither, the stream consumer stuck on it at every restart)."""
    project = pit_postgres.project
    prefix = f"fs-stream:{uuid.uuid4().hex[:8]}"
    store = FeatureStore(project.project_dir, "postgres", project.profiles_dir, redis_url=redis_url, key_prefix=prefix)
    at = datetime.now(UTC) - timedelta(minutes=1)
    try:
        for row, column in (({"label": "a\x00b"}, "label"), ({"user_id": "nul\x00"}, "user_id")):
            rows = [{"user_id": "fine", "event_timestamp": at, "amount": 1, "label": "ok"}]
            rows.append({**rows[0], **row})
            with pytest.raises(FeatsyncError, match=rf"row 1, column '{column}': .* holds a NUL character"):
                store.push("fv_user", rows, "online_and_offline")
        with pit_postgres.con.cursor() as cur:
            cur.execute("select to_regclass('featsync_push_log__fv_user') is null")  # in the pit schema (search_path)
            assert cur.fetchone()[0]  # nothing logged: not even the good row before the bad one
        assert store.get_online_features([{"user_id": "fine"}], ["fv_user:label"]).features["label"] == [None]
        result = store.push(
            "fv_user", [{"user_id": "fine", "event_timestamp": at, "amount": 1, "label": "ok"}], "online_and_offline"
        )
        assert result.offline_file.endswith("featsync_push_log__fv_user")
        with pit_postgres.con.cursor() as cur:
            cur.execute("select user_id, label from featsync_push_log__fv_user")
            assert cur.fetchall() == [("fine", "ok")]
    finally:
        pit_postgres.execute("drop table if exists featsync_push_log__fv_user")
        cleanup(project, redis.Redis.from_url(redis_url), prefix)
