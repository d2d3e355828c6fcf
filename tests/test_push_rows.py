"""Pushed rows (FeatureStore.push, featsync.online.ingest) against a real Redis and DuckDB:
the batch push's keys, values and expiry; newest wins across writers; refusals naming the
row and column with nothing written; the suite's row-level expectations."""

from __future__ import annotations

import math
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import given as given_examples
from hypothesis import strategies as st

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


# -- equal event times: the row the join picks (docs/push-api.md, "Equal event times") -------

TIE_TIMES = [NOW - H, NOW - H / 2]
TIE_CREATED = [None, NOW - 2 * H, NOW - H / 3]
TIE_LABELS = [None, "a", "b", "B", "é", "e\u0301", ""]
TIE_SCORES = [None, 0.5, 1.5, -1.0, math.inf, -math.inf, math.nan]


@st.composite
def tie_rows(draw) -> tuple[list[dict], list[dict]]:
    """fv_user and fv_pair rows of two or three entities and two event times: many ties, broken
    by created time and values (NULLs, text differing in case and normalization, NaN, inf)."""
    users = draw(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TIE_TIMES)), min_size=1, max_size=8))
    user_rows = [
        {
            "user_id": f"t{u}",
            "event_timestamp": at,
            "created_timestamp": draw(st.sampled_from(TIE_CREATED)),
            "amount": draw(st.sampled_from([None, 1, 2])),
            "label": draw(st.sampled_from(TIE_LABELS)),
        }
        for u, at in users
    ]
    pairs = draw(st.lists(st.tuples(st.integers(0, 1), st.sampled_from(TIE_TIMES)), min_size=1, max_size=8))
    pair_rows = [
        {"user_id": f"t{u}", "merchant_id": "m", "event_timestamp": at, "score": draw(st.sampled_from(TIE_SCORES))}
        for u, at in pairs
    ]
    return user_rows, pair_rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given_examples(rows=tie_rows(), data=st.data())
def test_pushed_rows_of_equal_event_times_serve_the_row_the_join_picks(pit, rows, data):
    """The same rows pushed by a client in one request (in any order, through the row path's
    hand-back and the batch path) and by `featsync push` from the warehouse (featsync.latest_rows,
    the join's order) store the same bytes: on equal event times the latest created_timestamp
    (NULL lowest) wins, then the greatest values in declared order (NULL lowest, text
    bytewise, NaN above every number). The push used to keep the last row given."""
    user_rows, pair_rows = rows
    tag = uuid.uuid4().hex[:6]
    user_rows = [{**r, "user_id": f"{r['user_id']}-{tag}"} for r in user_rows]
    pair_rows = [{**r, "user_id": f"{r['user_id']}-{tag}"} for r in pair_rows]

    def naive(at: datetime | None) -> datetime | None:
        return None if at is None else at.replace(tzinfo=None)

    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        con.execute("delete from user_rows")
        con.execute("delete from pair_rows")
        con.executemany(
            "insert into user_rows values (?, ?, ?, ?, ?)",
            [
                (r["user_id"], naive(r["event_timestamp"]), naive(r["created_timestamp"]), r["amount"], r["label"])
                for r in user_rows
            ],
        )
        con.executemany(
            "insert into pair_rows values (?, ?, ?, ?)",
            [(r["user_id"], r["merchant_id"], naive(r["event_timestamp"]), r["score"]) for r in pair_rows],
        )
    Pusher(pit.project, pit.client, key_prefix=pit.key_prefix).push(select=["fv_user", "fv_pair"], full_refresh=True)
    served = RowIngest(pit.project, pit.client, f"{pit.key_prefix}-rows")
    try:
        for view, given in (("fv_user", user_rows), ("fv_pair", pair_rows)):
            served.push(view, data.draw(st.permutations(given)))
            layouts = [ingest.layout(ingest.view(view)) for ingest in (pit, served)]
            for row in given:
                keys = [row[k] for k in pit.view(view).entities]
                batch, pushed = (pit.client.get(layout.key(keys)) for layout in layouts)
                assert pushed == batch, (view, keys)
    finally:
        cleanup(pit.project, pit.client, served.key_prefix)


def test_equal_event_times_across_requests_the_later_write_wins(pit):
    """docs/push-api.md, "Equal event times": across writes Redis holds no created time to
    compare, so the later write of an equal event time wins, whatever its created time."""
    at = NOW - H
    later = {**user_row("x1", at, 1, "created-later"), "created_timestamp": NOW - H / 2}
    earlier = {**user_row("x1", at, 2, "created-earlier"), "created_timestamp": NOW - 2 * H}
    assert pit.push("fv_user", [later]).online.keys_written == 1
    assert pit.push("fv_user", [earlier]).online.keys_written == 1
    assert read(pit, "fv_user", ["x1"], ["label"]) == {"label": ["created-earlier"]}
    # In one request, the join's order decides, whatever the order given.
    for rows in ([later, earlier], [earlier, later]):
        result = pit.push("fv_user", [{**r, "user_id": "x2"} for r in rows]).online
        assert (result.keys_written, result.skipped_superseded) == (1, 1)
        assert read(pit, "fv_user", ["x2"], ["label"]) == {"label": ["created-later"]}


def test_naive_timestamps_are_refused_from_every_shape(pit):
    """A pushed time without a zone is refused, never guessed, whatever the shape (a naive
    DataFrame or Arrow column used to be taken as UTC, while a naive datetime in a list was
    refused); the message names the row and column. NULLs alone guess nothing: taken."""
    naive = (NOW - H).replace(tzinfo=None)
    rows = [user_row("ok", NOW - H), user_row("nv", naive)]
    frame = pd.DataFrame([user_row("nv", naive)])
    shapes = {
        "list": rows,
        "columns": {k: [r[k] for r in rows] for k in rows[0]},
        "DataFrame": frame,
        "Arrow": pa.Table.from_pandas(frame, preserve_index=False),
        "Arrow (us)": pa.table({**{k: [v] for k, v in user_row("nv", None).items()}, "event_timestamp": pa.array([naive])}),
    }
    for shape, given in shapes.items():
        row = 1 if shape in ("list", "columns") else 0
        with pytest.raises(FeatsyncError, match=f"row {row}, column 'event_timestamp': .* is not a timestamp with a zone"):
            pit.push("fv_user", given)
    assert read(pit, "fv_user", ["ok", "nv"], ["amount"]) == {"amount": [None, None]}
    created = pd.Series([pd.NaT], dtype="datetime64[ns]")  # naive, but NULL: nothing to guess
    pit.push("fv_user", pd.DataFrame([user_row("nat", NOW - H)]).assign(created_timestamp=created))
    assert read(pit, "fv_user", ["nat"], ["amount"]) == {"amount": [1]}


def test_nan_is_nan_from_every_shape(pit):
    """A float feature's NaN is NaN whatever the shape (a DataFrame's used to become NULL, a
    list's or Arrow's stayed NaN); NULL is None (an object column, or a masked Arrow value).
    An integer feature's NaN in a DataFrame is pandas' gap marker: NULL."""
    scores = [0.5, math.nan, math.inf, None]
    rows = [{"user_id": f"n{i}", "merchant_id": "m", "event_timestamp": NOW - H, "score": s} for i, s in enumerate(scores)]
    layout = pit.pusher().layout(pit.view("fv_pair"))
    keys = [layout.key([r["user_id"], "m"]) for r in rows]
    pit.push("fv_pair", rows)
    expected = [pit.client.get(k) for k in keys]
    frame = pd.DataFrame(rows).assign(score=pd.Series(scores, dtype=object))
    shapes = {
        "columns": {k: [r[k] for r in rows] for k in rows[0]},
        "DataFrame (object)": frame,
        "DataFrame (Float64, NaN and NULL both NA)": frame.assign(score=pd.array([0.5, None, math.inf, None], dtype="Float64")),
        "Arrow": pa.Table.from_pylist(rows),
    }
    for shape, given in shapes.items():
        pit.client.delete(*keys)
        pit.push("fv_pair", given)
        want = [expected[3] if "Float64" in shape and i == 1 else v for i, v in enumerate(expected)]  # pandas' NA: NULL
        assert [pit.client.get(k) for k in keys] == want, shape
    pit.client.delete(*keys)
    pit.push("fv_pair", pd.DataFrame(rows[:3]))  # a float64 column: NaN, no NULL
    assert [pit.client.get(k) for k in keys[:3]] == expected[:3]
    got = OnlineReader(pit.registry, pit.client, pit.key_prefix).get(
        [{"user_id": r["user_id"], "merchant_id": "m"} for r in rows], ["fv_pair:score"]
    )
    assert math.isnan(got.features["score"][1]) and got.features["score"][2] == math.inf
    gaps = pd.DataFrame([user_row("g1", NOW - H, 3), user_row("g2", NOW - H, None)])  # amount: float64 [3.0, NaN]
    pit.push("fv_user", gaps)
    assert read(pit, "fv_user", ["g1", "g2"], ["amount"]) == {"amount": [3, None]}


PROFILE_TIMES = [NOW - 2 * H, NOW - H, NOW - H / 2]
PROFILE_VALID_TO = [None, NOW - H / 4, NOW - H / 3, NOW + H]  # past (expired at the push), or open / future


@st.composite
def profile_rows(draw) -> list[dict]:
    """fv_profile (valid_to, ttl 5h) rows of up to three users, where a user's newest row is
    often already past its valid_to while an older one is still valid."""
    picks = draw(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(PROFILE_TIMES)), min_size=1, max_size=8))
    return [
        {
            "user_id": f"p{u}",
            "event_timestamp": at,
            "valid_to": draw(st.sampled_from(PROFILE_VALID_TO)),
            "tier": draw(st.sampled_from([None, "a", "b"])),
        }
        for u, at in picks
    ]


def push_profiles_from_the_warehouse(pit, rows: list[dict]) -> None:
    def naive(at: datetime | None) -> datetime | None:
        return None if at is None else at.replace(tzinfo=None)

    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        con.execute("delete from profile_rows")
        con.executemany(
            "insert into profile_rows values (?, ?, ?, ?)",
            [(r["user_id"], naive(r["event_timestamp"]), naive(r["valid_to"]), r["tier"]) for r in rows],
        )
    Pusher(pit.project, pit.client, key_prefix=pit.key_prefix).push(select=["fv_profile"], full_refresh=True)


def test_a_key_whose_newest_pushed_row_expired_gets_nothing_as_from_the_warehouse(pit):
    """featsync.latest_rows picks each key's latest row, then `featsync push` drops it if it is
    past its validity: the key gets nothing. Pushed rows used to drop expired rows first, so an
    older row of that key, still valid, was written (served as current while the warehouse push
    serves nothing)."""
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"user_id": f"e1-{tag}", "event_timestamp": NOW - 2 * H, "valid_to": None, "tier": "old"},
        {"user_id": f"e1-{tag}", "event_timestamp": NOW - H, "valid_to": NOW - H / 2, "tier": "new, ended"},
        {"user_id": f"e2-{tag}", "event_timestamp": NOW - H, "valid_to": None, "tier": "only"},
        {"user_id": f"e3-{tag}", "event_timestamp": NOW - 2 * H, "valid_to": NOW - H / 2, "tier": "old, ended"},
        {"user_id": f"e3-{tag}", "event_timestamp": NOW - H, "valid_to": None, "tier": "new"},
    ]
    push_profiles_from_the_warehouse(pit, rows)
    users = [f"e{i}-{tag}" for i in (1, 2, 3)]
    assert read(pit, "fv_profile", users, ["tier"]) == {"tier": [None, "only", "new"]}
    served = RowIngest(pit.project, pit.client, f"{pit.key_prefix}-rows")
    try:
        for given in (rows, rows[::-1], pd.DataFrame(rows)):  # the row path's hand-back, and the batch path
            result = served.push("fv_profile", given).online
            assert read(served, "fv_profile", users, ["tier"]) == {"tier": [None, "only", "new"]}
            counts = (result.keys_written + result.skipped_stale, result.skipped_expired, result.skipped_superseded)
            assert counts == (2, 1, 2) and sum(counts) == result.rows_read == 5
    finally:
        cleanup(pit.project, pit.client, served.key_prefix)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given_examples(rows=profile_rows(), data=st.data())
def test_pushed_rows_past_their_validity_store_what_the_warehouse_push_stores(pit, rows, data):
    """Random fv_profile rows (newest rows often past valid_to, older ones valid), pushed by a
    client in any order and by `featsync push` from the warehouse: the same bytes per key, or
    no key on both sides; and the counts add up to the rows given."""
    tag = uuid.uuid4().hex[:6]
    rows = [{**r, "user_id": f"{r['user_id']}-{tag}"} for r in rows]
    push_profiles_from_the_warehouse(pit, rows)
    served = RowIngest(pit.project, pit.client, f"{pit.key_prefix}-rows")
    try:
        result = served.push("fv_profile", data.draw(st.permutations(rows))).online
        total = result.keys_written + result.skipped_stale + result.skipped_expired + result.skipped_superseded
        assert total == result.rows_read == len(rows)
        layouts = [ingest.layout(ingest.view("fv_profile")) for ingest in (pit, served)]
        for row in rows:
            batch, pushed = (pit.client.get(layout.key([row["user_id"]])) for layout in layouts)
            assert pushed == batch, row["user_id"]
    finally:
        cleanup(pit.project, pit.client, served.key_prefix)
