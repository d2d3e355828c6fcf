"""Pushed rows (FeatureStore.push, featsync.online.ingest) against a real Redis and DuckDB:
the batch push's keys, values and expiry; newest wins across writers; refusals naming the
row and column with nothing written; the suite's row-level expectations."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import redis

from conftest import copy_project
from featsync.errors import FeatsyncError
from featsync.online.ingest import RowIngest
from featsync.online.push import Pusher
from featsync.online.serving import OnlineReader
from featsync.online.state import read_state
from featsync.project import Project

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)


@pytest.fixture
def client(redis_url):
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def prefix():
    return f"featsync-pushapi-{uuid.uuid4().hex[:8]}"


def cleanup(project: Project, client, prefix: str) -> None:
    pusher = Pusher(project, client, key_prefix=prefix)
    keys = [k for pattern in pusher.key_patterns() for k in client.scan_iter(match=pattern, count=10_000)]
    if keys:
        client.delete(*keys)


@pytest.fixture
def pit(pit_duckdb, client, prefix):
    ingest = RowIngest(pit_duckdb, client, prefix)
    yield ingest
    cleanup(pit_duckdb, client, prefix)


def read(ingest: RowIngest, view: str, users: list[str], features: list[str]) -> dict:
    reader = OnlineReader(ingest.registry, ingest.client, ingest.key_prefix)
    response = reader.get([{"user_id": u} for u in users], [f"{view}:{f}" for f in features])
    return {f: response.features[f] for f in features}


def user_row(user: str, at: datetime, amount: int | None = 1, label: str | None = "x") -> dict:
    return {"user_id": user, "event_timestamp": at, "amount": amount, "label": label}


def test_pushed_rows_are_served_with_the_batch_push_s_expiry(pit):
    result = pit.push("fv_user", [user_row("u1", NOW - H, 7, "seven"), user_row("u2", NOW - 4 * H)])
    assert result.online.rows_read == 2
    assert result.online.keys_written == 1 and result.online.skipped_expired == 1  # 4h old, ttl 3h
    assert read(pit, "fv_user", ["u1", "u2"], ["amount", "label"]) == {"amount": [7, None], "label": ["seven", None]}
    layout = pit.pusher().layout(pit.view("fv_user"))
    expire_ms = pit.client.pexpiretime(layout.key(["u1"]))
    assert expire_ms == int((NOW - H + 3 * H).timestamp() * 1000) - 1  # valid up to event + ttl (featsync.online.validity)


def test_pandas_arrow_and_columns_give_the_same_bytes(pit):
    layout = pit.pusher().layout(pit.view("fv_user"))
    rows = [user_row("a", NOW - H, 3, "t"), user_row("b", NOW - H / 2, None, None)]
    pit.push("fv_user", rows)
    expected = {k: pit.client.get(layout.key([k])) for k in ("a", "b")}
    frame = pd.DataFrame(rows)
    for given in (frame, pa.Table.from_pandas(frame), {c: [r[c] for r in rows] for c in rows[0]}):
        pit.client.delete(layout.key(["a"]), layout.key(["b"]))
        pit.push("fv_user", given)
        assert {k: pit.client.get(layout.key([k])) for k in ("a", "b")} == expected


def test_an_older_row_never_replaces_a_newer_one(pit):
    pit.push("fv_user", [user_row("u1", NOW - H / 2, 2)])
    stats = pit.push("fv_user", [user_row("u1", NOW - H, 1)]).online
    assert stats.skipped_stale == 1 and stats.keys_written == 0
    # One request with both rows of a key, the newest first: the newest still wins.
    pit.push("fv_user", [user_row("u3", NOW - H / 4, 9), user_row("u3", NOW - H, 8)])
    assert read(pit, "fv_user", ["u1", "u3"], ["amount"]) == {"amount": [2, 9]}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([user_row("ok", NOW), user_row(None, NOW)], "row 1, column 'user_id': NULL"),
        ([user_row("ok", NOW), {**user_row("x", NOW), "colour": "red"}], "unknown column 'colour'"),
        ([{"user_id": "x", "event_timestamp": NOW, "amount": 1}], "column 'label' is missing"),
        ([user_row("ok", NOW), user_row("x", NOW, amount="12")], "row 1, column 'amount': '12' is not an integer"),
        ([user_row("ok", NOW), user_row("x", NOW, amount=1.5)], "row 1, column 'amount': 1.5 is not an integer"),
        ([user_row("ok", NOW), user_row("x", NOW, label=3)], "row 1, column 'label': 3 is not a string"),
        ([user_row("ok", NOW, 1.0), user_row("x", NOW, amount=True)], "row 1, column 'amount': True is not an integer"),
        ([user_row("ok", NOW), user_row("x", NOW, amount=2**64)], "row 1, column 'amount': 18446744073709551616"),
        ([user_row("ok", NOW), user_row("x", "2024-01-01T00:00:00")], "row 1, column 'event_timestamp'"),
        ([user_row("ok", NOW), user_row("x", NOW.replace(tzinfo=None))], "row 1, column 'event_timestamp'"),
        ([user_row("ok", NOW), user_row("x", None)], "row 1, column 'event_timestamp': NULL"),
    ],
)
def test_bad_rows_are_refused_naming_row_and_column_and_nothing_is_written(pit, rows, message):
    with pytest.raises(FeatsyncError, match="feature view 'fv_user'.*" + message.replace("(", r"\(")):
        pit.push("fv_user", rows)
    layout = pit.pusher().layout(pit.view("fv_user"))
    assert pit.client.get(layout.key(["ok"])) is None


def test_typed_frames_are_checked_too(pit):
    frame = pd.DataFrame({"user_id": ["a"], "event_timestamp": [pd.Timestamp(NOW)], "amount": [1.25], "label": ["x"]})
    with pytest.raises(FeatsyncError, match="row 0, column 'amount': 1.25 is not an integer"):
        pit.push("fv_user", frame)
    frame["amount"] = [2.0]  # a float without a fraction fits an integer exactly
    pit.push("fv_user", frame)
    assert read(pit, "fv_user", ["a"], ["amount"]) == {"amount": [2]}
    with pytest.raises(FeatsyncError, match="row 0, column 'label'.*is not a string"):
        pit.push("fv_user", frame.assign(label=[5]))


def test_unknown_view_and_destination(pit):
    with pytest.raises(FeatsyncError, match="no feature view named 'nope'"):
        pit.push("nope", [])
    with pytest.raises(FeatsyncError, match="'to' must be one of"):
        pit.push("fv_user", [user_row("a", NOW)], to="sideways")
    with pytest.raises(FeatsyncError, match="not online"):
        pit.push("fv_user_copy", [user_row("a", NOW)], to="online")


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_race_between_the_batch_push_and_pushed_rows(pit, engine, request):
    """The warehouse (DuckDB, PostgreSQL) holds rows at NOW - 1h for 400 users; concurrently,
    an API client pushes a newer row (NOW - 10 min) for the even users and an older one
    (NOW - 2h) for the odd users, while the batch push runs. Whatever the interleaving, each
    key ends with the newest row: the API's for even users, the warehouse's for odd users."""
    users = [f"r{i}" for i in range(400)]
    base = (NOW - H).replace(tzinfo=None)
    rows = [(u, base, base, 100, "batch") for u in users]
    project = pit.project
    if engine == "duckdb":
        with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
            con.execute("delete from user_rows")
            con.executemany("insert into user_rows values (?, ?, ?, ?, ?)", rows)
    else:
        pg = request.getfixturevalue("pit_postgres")
        project = pg.project
        pg.execute("delete from user_rows")
        with pg.con.cursor() as cur:
            cur.executemany("insert into user_rows values (%s, %s, %s, %s, %s)", rows)
    pusher = Pusher(project, pit.client, key_prefix=pit.key_prefix, chunk_rows=50)
    api_ingest = RowIngest(project, pit.client, pit.key_prefix)
    newer = [user_row(u, NOW - H / 6, 200, "api-newer") for u in users[::2]]
    older = [user_row(u, NOW - 2 * H, 50, "api-older") for u in users[1::2]]
    errors: list[BaseException] = []

    def api() -> None:
        try:
            for lo in range(0, 200, 20):
                api_ingest.push("fv_user", newer[lo : lo + 20] + older[lo : lo + 20])
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=api)
    thread.start()
    pusher.push(select=["fv_user"], full_refresh=True)
    thread.join()
    assert not errors
    got = read(pit, "fv_user", users, ["amount", "label"])
    assert got["label"] == ["api-newer" if i % 2 == 0 else "batch" for i in range(400)]
    assert got["amount"] == [200 if i % 2 == 0 else 100 for i in range(400)]
    # The newest event time online is the API's, however the writes interleaved: the batch
    # push's save (the warehouse's NOW - 1h) never lowers what the pushed rows raised.
    assert newest_event_time(pit) == NOW - H / 6
    # And a later batch push of the same warehouse rows does not undo the newer pushed rows.
    pusher.push(select=["fv_user"], full_refresh=True)
    assert read(pit, "fv_user", users, ["label"])["label"] == got["label"]
    assert newest_event_time(pit) == NOW - H / 6


def newest_event_time(ingest: RowIngest, view: str = "fv_user") -> datetime | None:
    return read_state(ingest.client, ingest.layout(ingest.view(view))).newest_event_time


def test_pushed_rows_move_the_newest_event_time_forward_only(pit, tmp_path, monkeypatch):
    """newest_event_time (freshness in the UI, /metrics): raised by pushed rows as by the batch
    push, never lowered by an older row, and never past the clock by a row dated in the future."""
    assert newest_event_time(pit) is None
    pit.push("fv_user", [user_row("n1", NOW - 2 * H), user_row("n2", NOW - H)])
    assert newest_event_time(pit) == NOW - H
    pit.push("fv_user", [user_row("n3", NOW - 2 * H)])  # older: written (a new key), the time stays
    assert newest_event_time(pit) == NOW - H
    pit.push("fv_user", [user_row("n4", NOW + H), user_row("n5", NOW - H / 2)])  # one in the future
    assert newest_event_time(pit) == NOW - H / 2
    pit.push("fv_user", [user_row("n6", NOW - 4 * H)])  # expired (ttl 3h): not written, not counted
    assert newest_event_time(pit) == NOW - H / 2
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    pit.push("fv_user", [user_row("n7", NOW - H / 4)], "offline")  # offline only: not online
    assert newest_event_time(pit) == NOW - H / 2
    layout = pit.layout(pit.view("fv_user"))
    pit.client.hset(layout.state_key, "newest_event_time", "not a time")  # not featsync's: replaced
    pit.push("fv_user", [user_row("n8", NOW - 2 * H)])
    assert newest_event_time(pit) == NOW - 2 * H


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example project (its suites), parsed only: pushing online needs no warehouse."""
    path = copy_project(tmp_path_factory.mktemp("pushrows") / "project")
    return Project.open(path, path, "dev")


def user_features(user: str, at: datetime, count_1d: int = 1) -> dict:
    return {
        "user_id": user,
        "event_timestamp": at,
        "transaction_count_1d": count_1d,
        **{f"transaction_count_{w}": 1 for w in ("7d", "30d", "90d")},
        **{f"amount_{a}_{w}": 10.0 for a in ("sum", "avg", "max") for w in ("7d", "30d")},
    }


def test_the_suite_s_row_level_expectations_apply(example, client, prefix):
    ingest = RowIngest(example, client, prefix)
    try:
        with pytest.raises(FeatsyncError) as info:
            ingest.push("user_transaction_features", [user_features("u1", NOW), user_features("u2", NOW, count_1d=-1)])
        message = str(info.value)
        assert "row 1, column 'transaction_count_1d': -1 fails expectation" in message
        assert "expect_column_values_to_be_between(min_value=0)" in message
        assert "expectations/user_transaction_features.json" in message
        view = ingest.view("user_transaction_features")
        assert client.get(ingest.pusher().layout(view).key(["u1"])) is None
        result = ingest.push("user_transaction_features", [user_features("u1", NOW)])
        assert result.online.keys_written == 1
        assert any("expect_table_row_count_to_be_between" in note and "whole table" in note for note in result.notes)
        # Skipped on request (push --rows --skip-validation): the types are still checked.
        skipped = ingest.push("user_transaction_features", [user_features("u2", NOW, count_1d=-1)], expectations=False)
        assert skipped.online.keys_written == 1 and "not applied" in skipped.notes[0]
        with pytest.raises(FeatsyncError, match="is not an integer"):
            ingest.push("user_transaction_features", [user_features("u3", NOW, count_1d="x")], expectations=False)
    finally:
        cleanup(example, client, prefix)


def test_cli_push_rows_from_csv_and_parquet(pit, tmp_path, redis_url):
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from featsync.cli import main

    project = pit.project
    base = ["push", "--project-dir", str(project.project_dir), "--profiles-dir", str(project.profiles_dir)]
    base += ["--target", "duckdb", "--redis-url", redis_url, "--key-prefix", pit.key_prefix]
    at = (NOW - H).isoformat().replace("+00:00", "Z")
    good = tmp_path / "rows.csv"
    good.write_text(f"user_id,event_timestamp,amount,label\nc1,{at},4,csv\nc2,{at},,\n")
    result = CliRunner().invoke(main, [*base, "--rows", str(good), "--select", "fv_user", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["online"]["keys_written"] == 2
    naive = pa.table(
        {"user_id": ["c3"], "event_timestamp": pa.array([NOW - H], pa.timestamp("us")), "amount": [5], "label": ["pq"]}
    )
    pq.write_table(naive, tmp_path / "naive.parquet")  # a timestamp without a zone: refused, never guessed
    result = CliRunner().invoke(main, [*base, "--rows", str(tmp_path / "naive.parquet"), "--select", "fv_user"])
    assert result.exit_code == 1 and "row 0, column 'event_timestamp'" in result.output
    assert "(timestamp[us]) is not a timestamp with a zone" in result.output
    table = naive.set_column(1, "event_timestamp", pa.array([NOW - H], pa.timestamp("ns", tz="Europe/Paris")))
    pq.write_table(table, tmp_path / "rows.parquet")
    result = CliRunner().invoke(main, [*base, "--rows", str(tmp_path / "rows.parquet"), "--select", "fv_user"])
    assert result.exit_code == 0, result.output
    assert read(pit, "fv_user", ["c1", "c2", "c3"], ["amount", "label"]) == {"amount": [4, None, 5], "label": ["csv", None, "pq"]}
    bad = tmp_path / "bad.csv"
    bad.write_text(f"user_id,event_timestamp,amount,label\nc9,{at},1,x\nc8,2024-01-01T00:00:00,1,x\n")
    result = CliRunner().invoke(main, [*base, "--rows", str(bad), "--select", "fv_user"])
    assert result.exit_code == 1
    assert "row 1, column 'event_timestamp'" in result.output
    assert read(pit, "fv_user", ["c9"], ["amount"]) == {"amount": [None]}
    result = CliRunner().invoke(main, [*base, "--rows", str(good), "--select", "fv_user,fv_pair"])
    assert result.exit_code == 64


def test_timestamps_of_any_precision_round_down_like_the_batch_push(pit):
    at = pd.Timestamp(NOW - H) + pd.Timedelta(nanoseconds=1999)  # nanoseconds
    frame = pd.DataFrame({"user_id": ["ns"], "event_timestamp": [at], "amount": [1], "label": ["x"]})
    pit.push("fv_user", frame)
    layout = pit.pusher().layout(pit.view("fv_user"))
    event, _ = layout.decode(pit.client.get(layout.key(["ns"])))
    assert event == (NOW - H) + timedelta(microseconds=1)  # 1.999 us rounded down, as the batch push does


def test_pushed_rows_refuse_a_view_id_owned_by_another_view(pit):
    view = pit.view("fv_user")
    layout = pit.pusher().layout(view)
    pit.client.hset(layout.state_key, "identity", "other/fv_x/v1")
    with pytest.raises(FeatsyncError, match=r"fv_user' v1 .* already uses"):
        pit.push("fv_user", [user_row("owned", NOW - H)])
    assert pit.client.get(layout.key(["owned"])) is None
