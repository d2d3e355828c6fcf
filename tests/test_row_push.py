"""The row path of small pushed requests (featsync.online.row_push) against the batch path.

Hypothesis draws requests of random rows for views of every pushable type (integers, floats,
booleans, text with separators and unicode, naive and zoned timestamps given as text of any
precision or as aware datetimes, NULL features, far-future and far-past times, duplicate
keys, missing and unknown columns, values of the wrong type, integers at the edges of int64 and
of +-2**53, text with a lone surrogate) and checks that:

- the row path's WRITE_NEWER call is byte for byte the batch path's (pack_writes), with
  the same counts of rows given and expired, and its typed rows are conform's table;
- it hands every request the batch path refuses or reduces (two rows of one key) back to
  the batch path, and takes every other request of at most SMALL_ROWS rows;
- through the server's POST /push (row path) and FeatureStore.push's RowIngest (batch
  path) under two key prefixes of the same Redis, the answers, the error messages and the
  stored values and expiry times are the same.

Fixed cases below pin the edges (the int64 minimum, lone surrogates in features, keys and
times: the same refusal from every shape and path) and the event-time precision of
WRITE_NEWER outside the years 1685 to 2255 (docs/internals.md).
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from redis.connection import Connection
from starlette.testclient import TestClient

from featsync.errors import FeatsyncError
from featsync.online.ingest import RowIngest
from featsync.online.push import CHUNK_ROWS, WRITE_NEWER, Pusher, encode_pushed, pack_writes
from featsync.online.row_push import SMALL_ROWS, encode_small
from featsync.online.rows import PushRowsError
from featsync.online.server import ServeConfig, create_app
from featsync.online.serving import OnlineReader, RequestError
from featsync.project import Project
from test_hardening import private_redis  # noqa: F401 (fixture)
from test_push_rows import cleanup

SHA = "0123456789abcdef0123456789abcdef01234567"
PROJECT = """
name: featsync_row_push
version: "1.0.0"
config-version: 2
profile: featsync_row_push
"""
PROFILES = """
featsync_row_push:
  target: dev
  outputs:
    dev: {type: duckdb, path: "%s", schema: main, threads: 1}
"""
# Three online views: text features (every value in the full form), fixed-width features
# under a composite key with an integer (the compact form where it applies), and an SCD2
# view with valid_to. rp_text has a suite with row-level expectations.
YAML = """
models:
  - name: rp_text
    config:
      meta:
        feature_view: {entities: [user_id], timestamp: event_timestamp, created_timestamp: created_at, ttl: 1d, online: true}
    columns:
      - {name: user_id, data_type: varchar}
      - {name: event_timestamp, data_type: timestamp}
      - {name: created_at, data_type: timestamptz}
      - {name: amount, data_type: double}
      - {name: n, data_type: bigint}
      - {name: flag, data_type: boolean}
      - {name: note, data_type: text}
      - {name: seen_at, data_type: timestamptz}
  - name: rp_fixed
    config:
      meta:
        feature_view: {entities: [shop_id, region], timestamp: event_ts, online: true}
    columns:
      - {name: shop_id, data_type: bigint}
      - {name: region, data_type: varchar(8)}
      - {name: event_ts, data_type: timestamptz}
      - {name: score, data_type: double}
      - {name: visits, data_type: integer}
      - {name: open, data_type: boolean}
      - {name: since, data_type: timestamp}
  - name: rp_scd
    config:
      meta:
        feature_view: {entities: [user_id], timestamp: event_timestamp, valid_to: valid_to, ttl: 3h, online: true}
    columns:
      - {name: user_id, data_type: text}
      - {name: event_timestamp, data_type: timestamp}
      - {name: valid_to, data_type: timestamp}
      - {name: value, data_type: float}
      - {name: tag, data_type: string}
"""
SQL = {
    "rp_text": "select 'u' as user_id, now()::timestamp as event_timestamp, now() as created_at, 1.0 as amount, "
    "1 as n, true as flag, 'x' as note, now() as seen_at",
    "rp_fixed": "select 1 as shop_id, 'eu' as region, now() as event_ts, 1.0 as score, 1 as visits, true as open, "
    "now()::timestamp as since",
    "rp_scd": "select 'u' as user_id, now()::timestamp as event_timestamp, now()::timestamp as valid_to, "
    "1.0 as value, 't' as tag",
}
SUITE = {
    "name": "rp_text",
    "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": -(10**15)}},
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "note", "value_set": ["forbidden"]}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    ],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("row_push")
    path = root / "project"
    (path / "models").mkdir(parents=True)
    (path / "expectations").mkdir()
    (path / "dbt_project.yml").write_text(PROJECT)
    (path / "profiles.yml").write_text(PROFILES % (root / "rp.duckdb"))
    (path / "models" / "views.yml").write_text(YAML)
    for name, sql in SQL.items():
        (path / "models" / f"{name}.sql").write_text(sql)
    (path / "expectations" / "rp_text.json").write_text(json.dumps(SUITE))
    opened = Project.open(path, path, "dev")
    opened.registry()  # dbt parse, once
    return opened


class Ingest(RowIngest):
    def __repr__(self) -> str:  # Hypothesis prints a failing example's arguments: not the manifest
        return f"RowIngest({self.project.project_dir.name}, {self.key_prefix})"


@pytest.fixture(scope="module")
def ingest(project) -> RowIngest:
    ingest = Ingest(project, None, f"hs:rowpush:{uuid.uuid4().hex[:8]}")
    for view in ingest.registry.online_views():
        ingest.checks(view)  # the suite: loaded once, before Hypothesis times examples
    return ingest


# -- values --------------------------------------------------------------------------------

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30)), ZoneInfo("America/New_York")]
)
KEY_TEXT = st.one_of(st.sampled_from(["a", "b", "a|b", "a\\", "\\|", "é", "日本", ""]), st.text(max_size=6))
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "|", "\\", "a|b\\c", "ü€𝄞", "forbidden"]))
VALID = {
    "int": st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-5, 5),
        st.integers(-(2**40), 2**40).map(float),  # a float with no fraction is an integer
        st.sampled_from([-(2.0**63), float(2**62)]),  # the int64 minimum exactly, as a float
    ),
    "float": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.integers(-(2**53), 2**53),
        st.sampled_from([0.0, -0.0]),
        st.sampled_from([math.nan, math.inf, -math.inf]),  # not in JSON: FeatureStore.push's Python rows only
    ),
    "bool": st.booleans(),
    "text": TEXT,
}
INVALID = {
    "int": st.sampled_from([1.5, "12", True, 2**63, -(2**63) - 1, 2**64, 2.0**63, "\ud800"]),
    # abs() of the int64 minimum is itself: it once passed the +-2**53 check and failed the cast
    "float": st.sampled_from([2**53 + 1, -(2**53) - 1, -(2**63), 2**63 - 1, "1.5", False]),
    "bool": st.sampled_from([0, 1, "true"]),
    "text": st.sampled_from([3, 1.5, True, "a\ud800b", "\udfff"]),  # a lone surrogate is not UTF-8
    "time": st.sampled_from(
        [
            "2024-01-01T00:00:00",  # no zone
            "yesterday",
            1700000000,
            "2024-13-01T00:00:00Z",
            "2016-12-31T23:59:60Z",  # a leap second
            "2026-11-29T21:00:00.123456789",  # nanoseconds, but no zone
            "9999-12-31T23:00:00-05:00",  # after the year 9999 in UTC
            "0001-01-01T00:30:00+01:00",  # before the year 1 in UTC
            "2026-11-29T11:00:00\ud800Z",  # a lone surrogate
        ]
    ),
}
FAR = st.sampled_from(
    [
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "2106-02-07T06:28:15Z",  # the last second of the compact form
        "2106-02-07T06:28:16Z",
        "2200-01-01T00:00:00.5Z",
        "2026-11-29T21:00:00.123456789Z",  # nanoseconds: floored to the microsecond
        "9999-12-31T23:59:59.999999999z",  # the last nanosecond, a lower-case z
    ]
)
# An instant relative to the request's clock: on either side of the TTLs' edges but never
# within minutes of one (so that two pushes milliseconds apart agree on what expired), in
# whole seconds (the compact form) or not; it is made a value when the request is built.
NEAR = st.tuples(
    st.just("at"),
    st.builds(
        lambda hours, micros: timedelta(hours=hours, minutes=20, microseconds=micros),
        st.integers(-60, 60),
        st.sampled_from([0, 10**6]) | st.integers(0, 20 * 60 * 10**6),
    ),
    ZONES,
    st.sampled_from(["iso", "micros", "space", "short zone", "datetime", "nanos", "lower"]),
)
VALID["time"] = st.one_of(NEAR, NEAR, NEAR, FAR)


def instant_value(spec, now: datetime, as_json: bool):
    if not isinstance(spec, tuple):
        return spec
    _, offset, zone, form = spec
    at = (now + offset).astimezone(zone)
    if form == "datetime" and not as_json:
        return at
    if form == "micros":
        return at.isoformat(timespec="microseconds")
    if form == "short zone":  # +0200
        text = at.isoformat()
        return text[:-3] + text[-2:]
    if form == "space":
        return at.isoformat(sep=" ").replace("+00:00", "Z")
    if form == "nanos":  # Java's Instant.toString(), .NET's "o", pandas' ns isoformat: floored
        text = at.isoformat(timespec="microseconds")
        return text[:26] + "789" + text[26:]
    if form == "lower":  # RFC 3339 allows a lower-case t and z
        return at.isoformat().replace("+00:00", "z").replace("T", "t")
    return at.isoformat().replace("+00:00", "Z")


VIEWS = {
    "rp_text": {
        "user_id": "key",
        "event_timestamp": "event",
        "created_at": "time",
        "amount": "float",
        "n": "int",
        "flag": "bool",
        "note": "text",
        "seen_at": "time",
    },
    "rp_fixed": {
        "shop_id": "int key",
        "region": "key",
        "event_ts": "event",
        "score": "float",
        "visits": "int",
        "open": "bool",
        "since": "time",
    },
    "rp_scd": {"user_id": "key", "event_timestamp": "event", "valid_to": "time", "value": "float", "tag": "text"},
}


@st.composite
def requests(draw):
    """(view, columns) of a request, mostly of valid rows, with timestamps still relative to the
    clock; one time in four, one thing wrong with it."""
    view = draw(st.sampled_from(sorted(VIEWS)))
    kinds = VIEWS[view]
    n = draw(st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.sampled_from([SMALL_ROWS, SMALL_ROWS + 1])))
    keys = draw(st.sampled_from([KEY_TEXT, KEY_TEXT, KEY_TEXT, st.sampled_from(["u1", "u2"])]))  # few keys: duplicates
    nulls = draw(st.sampled_from([0, 0.2, 1]))  # the share of NULL features and optional times
    columns = {}
    for name, kind in kinds.items():
        if kind == "key":
            values = st.lists(keys, min_size=n, max_size=n)
        elif kind == "int key":
            values = st.lists(st.one_of(VALID["int"], st.sampled_from([1, 2])), min_size=n, max_size=n)
        elif kind == "event":  # half the time one instant for every row: ties on the event time
            one = st.lists(st.just(draw(VALID["time"])), min_size=n, max_size=n)
            values = st.one_of(st.lists(VALID["time"], min_size=n, max_size=n), one)
        else:
            value = VALID[kind]
            if nulls:
                value = st.none() if nulls == 1 else st.one_of(value, value, value, value, st.none())
            values = st.lists(value, min_size=n, max_size=n)
        columns[name] = draw(values)
    wrong = draw(st.integers(0, 29))
    name = draw(st.sampled_from(sorted(kinds)))
    kind = kinds[name].split()[-1]
    row = draw(st.integers(0, n - 1))
    if wrong < 3:  # a value of the wrong type (or a time out of range, or without a zone)
        invalid = INVALID["time" if kind == "event" else "text" if kind == "key" else kind]
        columns[name][row] = draw(invalid)
    elif wrong == 3 and kind in ("key", "event"):
        columns[name][row] = None
    elif wrong == 4:
        columns["colour"] = ["red"] * n  # an unknown column
    elif wrong == 5 and kinds[name] not in ("key", "int key", "event"):
        columns.pop(name)  # a feature missing (allowed for created_at and valid_to)
    elif wrong == 6:
        columns[name] = columns[name][:-1] or [None, None]  # lengths differ
    return view, columns


def as_parsed_json(df: dict) -> dict:
    """What POST /push hands on: JSON's types only, as the server's parser reads them (orjson
    refuses integers beyond 64 bits: a 400 before any row is looked at, not drawn here)."""
    finite = {k: [None if isinstance(v, float) and not math.isfinite(v) else v for v in vs] for k, vs in df.items()}
    try:  # a client's JSON encoder sends NaN and infinities as null (orjson does)
        return orjson.loads(json.dumps(finite))
    except orjson.JSONDecodeError:
        assume(False)


def built(columns: dict, now: datetime, as_json: bool) -> dict:
    return {name: [instant_value(v, now, as_json) for v in values] for name, values in columns.items()}


# -- the two paths, side by side -------------------------------------------------------------


def batch_path(ingest: RowIngest, name: str, df: dict, now: datetime, now_us: int) -> tuple:
    try:
        view, table, _ = ingest.prepare(name, df, "online", now)
        pushed = encode_pushed(ingest.layout(view), table, now_us)
    except FeatsyncError as exc:
        return ("refused", type(exc).__name__, str(exc)), None
    rows = pushed.rows
    command = b"".join(bytes(part) for call in pack_writes(SHA, rows, CHUNK_ROWS) for part in call) if rows else None
    return ("written", pushed.given, pushed.expired, pushed.newest_event, command), (table, rows)


def row_path(ingest: RowIngest, name: str, df: dict, now: datetime, now_us: int) -> tuple | None:
    try:
        small = ingest.prepare_small(name, df, "online", now)
    except FeatsyncError as exc:  # the suite's row-level expectations, run on the typed rows
        return ("refused", type(exc).__name__, str(exc)), None
    if small is None:
        return None
    view, typed = small
    encoded = encode_small(ingest.layout(view), typed, now_us)
    if encoded is None:
        return None
    rows = encoded.rows
    command = None
    if rows is not None:
        command = b"".join(Connection().pack_command(*rows.script_call(SHA)))  # redis-py's framing
        assert rows.packed(SHA) == command  # hiredis', the server's
    return ("written", encoded.given, encoded.expired, encoded.newest_event, command), typed


def plain_in_range(view, table) -> bool:
    """Every timestamp of the conformed rows within the years 1 to 9999 (else the batch path
    may write rows whose features it never looks at, which the row path leaves to it)."""
    from featsync.online.layout import MAX_MICROS, MIN_MICROS

    for column in view.columns:
        if column.type.kind == "timestamp":
            for value in table.column(column.name).cast("int64").to_pylist():
                if value is not None and not MIN_MICROS <= value <= MAX_MICROS:
                    return False
    return True


def as_text(table: pa.Table) -> str:
    """A table's rows as text, NaN included; timestamps as their integers (a valid_to past the
    year 9999 in UTC, which the push takes as an open end, has no Python datetime)."""
    columns = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in table.columns]
    return repr(pa.table(columns, names=table.column_names).to_pylist())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests(), as_json=st.booleans(), shape=st.sampled_from(["columns", "rows", "rows with gaps"]))
# valid_to past the year 9999 once in UTC: an open end the push takes (the test's own comparison
# used to overflow converting it to a Python datetime)
@example(
    request=(
        "rp_scd",
        {
            "user_id": ["u1"],
            "event_timestamp": ["2026-11-29T10:00:00Z"],
            "valid_to": ["9999-12-31T23:00:00-05:00"],
            "value": [1.5],
            "tag": ["t"],
        },
    ),
    as_json=True,
    shape="columns",
)
def test_the_row_path_writes_what_the_batch_path_writes(ingest, request, as_json, shape):
    name, columns = request
    now = datetime.now(UTC)
    now_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    df = built(columns, now, as_json)
    if as_json:
        df = as_parsed_json(df)
    if shape != "columns" and len({len(v) for v in df.values()}) == 1:  # a list of dicts, as the stream pushes
        df = [dict(zip(df, values, strict=True)) for values in zip(*df.values(), strict=True)]
        if shape == "rows with gaps":  # a NULL left out of its row is NULL
            df = [{k: v for k, v in row.items() if v is not None} for row in df]
    batch, batch_out = batch_path(ingest, name, df, now, now_us)
    rows = row_path(ingest, name, df, now, now_us)
    event(f"row path: {'taken' if rows is not None else 'handed back'}; batch path: {batch[0]}")
    if rows is not None:
        outcome, typed = rows
        assert outcome == batch
        if typed is not None:  # the suite's checks see the same rows (NaN included: compared as text)
            table = typed.table()
            assert table.schema == batch_out[0].schema and as_text(table) == as_text(batch_out[0])
        return
    # The row path hands a request back only when the batch path refuses or reduces it.
    n = len(df) if isinstance(df, list) else max(len(v) for v in df.values())
    if batch[0] == "written" and n <= SMALL_ROWS and plain_in_range(ingest.view(name), batch_out[0]):
        table, encoded = batch_out
        # Reduced: fewer keys written or expired than rows given (superseded rows; the key
        # of an expired winner is counted once, as expired, whatever its older rows).
        written = 0 if encoded is None else len(encoded.keys)
        assert written + batch[2] < batch[1], (df, batch)


def test_the_row_path_takes_plain_requests_and_matches_the_batch_path(ingest):
    """Fixed cases, so that a regression shows without Hypothesis' luck: every form of a
    value the row path takes, once."""
    now = datetime(2026, 11, 29, 12, 0, 0, 250_000, tzinfo=UTC)
    now_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    zoned = datetime(2026, 11, 29, 14, 0, tzinfo=timezone(timedelta(hours=3)))
    cases = [
        (
            "rp_text",
            {
                "user_id": ["a|b", "ü\\", ""],
                "event_timestamp": ["2026-11-29T11:00:00Z", "2026-11-29 10:59:59.123456+02:00", zoned],
                "created_at": [None, "2026-11-29T11:00:00.5Z", zoned],
                "amount": [1, 2.5, None],
                "n": [2**63 - 1, -(10**15), 3.0],
                "flag": [True, None, False],
                "note": ["日本 | \\", None, ""],
                "seen_at": ["9999-12-31T23:59:59.999999Z", None, "0001-01-01T00:00:00Z"],
            },
        ),
        (
            "rp_fixed",
            {
                "shop_id": [1, -(2**63), 7.0],
                "region": ["eu", "us|w", "ap"],
                "event_ts": ["2026-11-29T11:00:00Z", "2026-11-29T11:00:00.000001Z", "2106-02-07T06:28:16Z"],
                "score": [0.1, -0.0, 2**53],
                "visits": [2**63 - 1, None, -(2**63)],
                "open": [True, False, True],
                "since": ["1970-01-01T00:00:00Z", "2026-11-29T11:00:00Z", None],
            },
        ),
        (
            "rp_scd",
            {
                "user_id": ["v1", "v2", "v3"],
                "event_timestamp": ["2026-11-29T11:00:00Z", "2026-11-29T08:00:00Z", "2026-11-29T11:30:00Z"],
                "valid_to": [None, "2026-11-29T13:00:00Z", "2026-11-29T11:59:59Z"],  # v2: ttl over; v3: ended
                "value": [1.0, 2.0, 3.0],
                "tag": ["x", "y", None],
            },
        ),
    ]
    for name, df in cases:
        batch, _ = batch_path(ingest, name, df, now, now_us)
        rows = row_path(ingest, name, df, now, now_us)
        assert batch[0] == "written", batch
        assert rows is not None and rows[0] == batch


def test_refused_and_duplicate_requests_go_to_the_batch_path(ingest):
    now = datetime.now(UTC)
    ok = {
        "user_id": ["a"],
        "event_timestamp": ["2026-11-29T11:00:00Z"],
        "value": [1.0],
        "tag": ["x"],
    }
    assert ingest.prepare_small("rp_scd", ok, "online", now) is not None
    for df in (
        {**ok, "value": ["1.0"]},  # a text for a number
        {**ok, "user_id": [None]},  # a NULL key
        {**ok, "event_timestamp": ["2026-11-29T11:00:00"]},  # no zone
        {**ok, "colour": ["red"]},  # an unknown column
        {k: v * (SMALL_ROWS + 1) for k, v in ok.items()},  # too many rows for the row path
    ):
        assert ingest.prepare_small("rp_scd", df, "online", now) is None
    assert ingest.prepare_small("rp_scd", ok, "online_and_offline", now) is None  # the offline log is the batch path's
    twice = {k: v * 2 for k, v in ok.items()}  # one key twice: the batch path keeps the newest
    view, typed = ingest.prepare_small("rp_scd", twice, "online", now)
    assert encode_small(ingest.layout(view), typed, 0) is None
    # The suite's row-level expectations apply on the row path too, with the batch path's message.
    with pytest.raises(FeatsyncError, match=r"row 0, column 'note': 'forbidden' fails expectation #2"):
        ingest.prepare_small(
            "rp_text",
            {"user_id": ["a"], "event_timestamp": ["2026-11-29T11:00:00Z"], "amount": [1.0], "n": [1], "flag": [True],
             "note": ["forbidden"], "seen_at": [None]},
            "online",
            now,
        )  # fmt: skip


# -- through Redis: POST /push (row path) against RowIngest.push (batch path) --------------


@pytest.fixture(scope="module")
def two_prefixes(project, redis_url):
    """The server's app under one key prefix, the batch path's RowIngest under another, one Redis."""
    client = redis.Redis.from_url(redis_url)
    server_prefix, batch_prefix = (f"hs:rowpush:{uuid.uuid4().hex[:8]}" for _ in range(2))
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", redis_url, server_prefix, max_batch=100)
    batch = Ingest(project, client, batch_prefix)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        http.headers["content-type"] = "application/json"  # (a write must be sent as JSON)
        yield http, batch, Ingest(project, client, server_prefix)
    for prefix in (server_prefix, batch_prefix):
        cleanup(project, client, prefix)


def stored(ingest: RowIngest, name: str) -> dict:
    """Every key of a view under the ingest's prefix (without the prefix): (value, PXAT)."""
    layout = ingest.layout(ingest.view(name))
    client = ingest.client
    keys = sorted(k for k in client.scan_iter(match=f"{layout.prefix}*", count=1000))
    return {k[len(layout.prefix) :]: (client.get(k), client.pexpiretime(k)) for k in keys}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
def test_post_push_and_the_batch_path_store_the_same(two_prefixes, request):
    http, batch, served = two_prefixes
    name, columns = request
    body = as_parsed_json(built(columns, datetime.now(UTC), as_json=True))
    reply = http.post("/push", content=json.dumps({"push_source_name": name, "df": body}))
    try:  # the batch path, as RowIngest.push takes it for any other request
        view, table, _ = batch.prepare(name, body, "online")
        stats = batch.pusher().push_rows(view, table, batch.layout(view))
    except FeatsyncError as exc:
        assert reply.status_code == (422 if isinstance(exc, PushRowsError) else 400), reply.text
        assert reply.json()["detail"] == str(exc)
    else:
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert (answer["written"], answer["stale"], answer["expired"], answer["superseded"]) == (
            stats.keys_written,
            stats.skipped_stale,
            stats.skipped_expired,
            stats.skipped_superseded,
        )
        assert sum(answer[k] for k in ("written", "stale", "expired", "superseded")) == answer["rows"]
    assert stored(served, name) == stored(batch, name)


def test_the_compact_and_full_forms_both_occur(ingest):
    """The row path's two value forms (the compact one needs whole seconds, no NULL): the
    property test's data reach both."""
    now = datetime.now(UTC)
    now_us = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    base = {"shop_id": [1], "region": ["eu"], "score": [0.5], "visits": [1], "open": [True], "since": [None]}
    lengths = set()
    for at, since in (("2026-11-29T11:00:00Z", "2026-11-29T11:00:00Z"), ("2026-11-29T11:00:00.5Z", None)):
        df = {**base, "event_ts": [at], "since": [since]}
        view, typed = ingest.prepare_small("rp_fixed", df, "online", now)
        lengths.add(len(encode_small(ingest.layout(view), typed, now_us).rows.values[0]))
    layout = ingest.layout(ingest.view("rp_fixed"))
    assert lengths == {layout.compact_length, layout._fixed_dtype.itemsize}


def test_feature_store_push_takes_the_row_path_too(two_prefixes, monkeypatch):
    _, batch, served = two_prefixes
    df = {"user_id": ["fs|1"], "event_timestamp": [datetime.now(UTC)], "value": [0.5], "tag": ["ü"]}
    view, table, _ = batch.prepare("rp_scd", df, "online")
    expected = batch.pusher().push_rows(view, table, batch.layout(view))

    def batch_path(*args, **kwargs):
        raise AssertionError("a small request of plain rows went the batch path")

    monkeypatch.setattr(Pusher, "push_rows", batch_path)
    result = served.push("rp_scd", df)
    assert (result.rows, result.online.keys_written, result.online.rows_read) == (1, 1, expected.rows_read)
    assert stored(served, "rp_scd") == stored(batch, "rp_scd")


def test_the_row_path_loads_the_script_again_after_script_flush(project, private_redis):  # noqa: F811
    url, _, _ = private_redis
    client = redis.Redis.from_url(url)
    ingest = RowIngest(project, client, "noscript")
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", url, "noscript", max_batch=100)
    df = {"user_id": ["s1"], "event_timestamp": ["2026-11-29T10:00:00Z"], "value": [1.0], "tag": ["a"]}
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        for attempt in range(2):
            at = [(datetime.now(UTC) - timedelta(minutes=60 - attempt)).isoformat()]
            assert ingest.push("rp_scd", {**df, "event_timestamp": at}, "online").online.keys_written == 1
            client.script_flush()
            body = {"push_source_name": "rp_scd", "df": {**df, "user_id": ["s2"], "event_timestamp": at}}
            reply = http.post("/push", json=body)
            assert reply.status_code == 200 and reply.json()["written"] == 1, reply.text
            client.script_flush()


def test_a_script_load_that_hangs_is_a_503_within_the_redis_timeout(project, private_redis):  # noqa: F811
    """POST /push loads its scripts (SCRIPT LOAD) the first time a worker needs them; that load was
    not bounded by --redis-timeout as the writes are, so a Redis that stopped answering held the
    request (here until the pause ended, then a 200). The view is owned first by a request that
    Redis refused the load (an ACL), so that the load is the request's first command; CLIENT
    PAUSE then makes Redis hold every client's commands."""
    url, _, _ = private_redis
    client = redis.Redis.from_url(url)
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", url, "hang", redis_timeout=0.5)
    df = {"user_id": ["h1"], "event_timestamp": [datetime.now(UTC).isoformat()], "value": [1.0], "tag": ["a"]}
    body = {"push_source_name": "rp_scd", "df": df}
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        client.execute_command("ACL", "SETUSER", "default", "-script|load")
        reply = http.post("/push", json=body)
        assert reply.status_code == 503 and "no permissions" in reply.text, reply.text  # the view is owned, no script loaded
        client.execute_command("ACL", "SETUSER", "default", "+script|load")
        client.execute_command("CLIENT", "PAUSE", 5_000, "ALL")  # not to be lifted early: UNPAUSE waits too
        reply = http.post("/push", json=body)
        client.ping()  # returns when the pause ends
        assert reply.status_code == 503 and "unreachable" in reply.json()["detail"], reply.text
        assert http.post("/push", json=body).status_code == 200


def rp_text_body(n: int, at: datetime) -> bytes:
    """A POST /push body of n rows of rp_text (users u0..), all at `at`."""
    users = [f"u{i}" for i in range(n)]
    df = {"user_id": users, "event_timestamp": [at.isoformat()] * n, "amount": [1.0] * n, "n": [1] * n}
    df |= {"flag": [True] * n, "note": ["x"] * n, "seen_at": [None] * n}
    return orjson.dumps({"push_source_name": "rp_text", "df": df})


@pytest.mark.parametrize("n", [2, SMALL_ROWS + 6], ids=["row path", "batch path"])
def test_a_failed_push_does_not_raise_the_newest_event_time(project, redis_url, n):
    """POST /push raises the view's newest_event_time only once its writes succeeded: a write the
    script refuses (here a stored value too short to be featsync's) is a 409 naming the key,
    writes none of the request's rows (the script checks every stored value before writing)
    and leaves the recorded time where it was."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-rowpush-{uuid.uuid4().hex[:8]}"
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", redis_url, prefix, max_batch=100)
    ingest = Ingest(project, client, prefix)
    layout = ingest.layout(ingest.view("rp_text"))
    users = [f"u{i}" for i in range(n)]
    body = functools.partial(rp_text_body, n)

    first = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    try:
        with TestClient(create_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
            http.headers["content-type"] = "application/json"
            assert http.post("/push", content=body(first)).status_code == 200
            recorded = client.hget(layout.state_key, "newest_event_time")
            assert recorded == first.isoformat(timespec="microseconds").encode()
            client.set(layout.key([users[-1]]), "xx")
            before = client.get(layout.key([users[0]]))
            failed = http.post("/push", content=body(first + timedelta(minutes=9)))
            assert failed.status_code == 409, failed.text
            assert f"Redis key '{layout.key([users[-1]]).decode()}' (2 bytes) is not a featsync value" in failed.text
            assert client.get(layout.key([users[0]])) == before  # the rows before the foreign key: not written
            assert client.hget(layout.state_key, "newest_event_time") == recorded
    finally:
        keys = [*client.scan_iter(match=layout.prefix + "*", count=5000), layout.state_key.encode()]
        client.delete(*keys)


# -- values at the edges of their kinds ------------------------------------------------------

EDGE_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EDGE_NOW_US = (EDGE_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def edge_request(name: str, column: str, values: list) -> dict:
    """A valid two-row request of `name` whose `column` holds `values` (keys unique to it; the
    bad value, if any, in row 1)."""
    tag = uuid.uuid4().hex[:6]
    if name == "rp_fixed":
        df = {"shop_id": [701, 702], "region": [f"ok-{tag}", f"x-{tag}"], "event_ts": ["2026-11-29T11:00:00Z"] * 2}
        df |= {"score": [0.5, 0.5], "visits": [1, 1], "open": [True, True], "since": [None, None]}
    else:
        df = {"user_id": [f"ok-{tag}", f"x-{tag}"], "event_timestamp": ["2026-11-29T11:00:00Z"] * 2, "created_at": [None] * 2}
        df |= {"amount": [0.5, 0.5], "n": [1, 1], "flag": [True, True], "note": ["a", "b"], "seen_at": [None] * 2}
    return {**df, column: values}


SURROGATE = "a\ud800b"  # a lone surrogate: a Python str may hold one, JSON (orjson) and UTF-8 cannot


def surrogates(values: list) -> bool:
    return any(isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v) for v in values)


def shapes(df: dict, values: list) -> dict:
    """The same rows as the Python API takes them: columns, a list of rows, pandas, Arrow; the
    last two only where they hold `values` as given (pandas makes [0.5, -2**63] floats, and an
    Arrow string cannot hold a lone surrogate)."""
    import pandas as pd
    import pyarrow as pa

    out = {"columns": df, "rows": [dict(zip(df, row, strict=True)) for row in zip(*df.values(), strict=True)]}
    if {type(v) for v in values} == {int, float}:
        return out
    if surrogates(values):  # pandas 3's str columns are Arrow's: object
        out["pandas"] = pd.DataFrame({k: pd.Series(v, dtype=object) if v is values else v for k, v in df.items()})
        return out
    out["pandas"] = pd.DataFrame(df)
    out["arrow"] = pa.Table.from_pandas(out["pandas"], preserve_index=False)
    return out


@pytest.mark.parametrize(
    ("name", "column", "values", "message"),
    [
        # abs() of the int64 minimum wraps to itself: this used to pass the 2**53 check, then fail the cast (a 500)
        ("rp_fixed", "score", [3, -(2**63)], "-9223372036854775808 is not a number that a float holds exactly"),
        ("rp_text", "amount", [0.5, -(2**63)], "-9223372036854775808 is not a number that a float holds exactly"),
        ("rp_fixed", "score", [3, 2**53 + 1], "9007199254740993 is not a number that a float holds exactly"),
        ("rp_fixed", "score", [3, -(2**53) - 1], "-9007199254740993 is not a number that a float holds exactly"),
        ("rp_fixed", "score", [3, 2**60], "1152921504606846976 is not a number that a float holds exactly"),
        ("rp_text", "note", ["ok", SURROGATE], r"'a\ud800b' is not valid text (a lone surrogate does not encode as UTF-8)"),
        ("rp_text", "user_id", ["ok", "\udfff"], r"'\udfff' is not valid text"),  # an entity key
        ("rp_fixed", "region", ["ok", SURROGATE], r"'a\ud800b' is not valid text"),  # part of a composite key
        ("rp_text", "seen_at", [None, "2026-11-29T11:00:00\ud800Z"], r"'2026-11-29T11:00:00\ud800Z' is not valid text"),
        ("rp_text", "event_timestamp", ["2026-11-29T11:00:00Z", "\ud800"], r"'\ud800' is not valid text"),
        ("rp_fixed", "visits", [1, SURROGATE], r"'a\ud800b' is not an integer"),
        ("rp_fixed", "open", [True, SURROGATE], r"'a\ud800b' is not a boolean"),
    ],
)
def test_edge_values_are_refused_alike_on_every_path(two_prefixes, name, column, values, message):
    """The int64 minimum in a float column and a lone surrogate anywhere (features, keys,
    times) are refused, naming the view, row and column, with one message whatever the
    request's shape and path (it used to be an ArrowInvalid, a 500 over HTTP, and a raw
    UnicodeEncodeError); nothing of the request is written."""
    http, batch, served = two_prefixes
    df = edge_request(name, column, values)
    with pytest.raises(PushRowsError) as refused:
        batch.prepare(name, df, "online", EDGE_NOW)
    expected = str(refused.value)
    assert expected.startswith(f"feature view '{name}': row 1, column '{column}': {message}"), expected
    for shape, rows in shapes(df, values).items():
        with pytest.raises(PushRowsError) as refused:
            batch.prepare(name, rows, "online", EDGE_NOW)
        assert str(refused.value) == expected, shape
        str(refused.value).encode()  # the message itself is UTF-8: it can be logged, sent, dead-lettered
        small = row_path(batch, name, rows, EDGE_NOW, EDGE_NOW_US)
        assert small is None or small[0][0] == "refused", shape  # the row path hands it back
        for ingest in (served, batch):  # RowIngest.push: the row path first, then the batch path
            with pytest.raises(PushRowsError, match="^" + re.escape(expected) + "$"):
                ingest.push(name, rows, "online")
    if not surrogates(values):  # JSON cannot carry a lone surrogate (orjson refuses such a body: a 400)
        reply = http.post("/push", content=json.dumps({"push_source_name": name, "df": df}))
        assert reply.status_code == 422 and reply.json()["detail"] == expected, reply.text
    for ingest in (served, batch):
        layout = ingest.layout(ingest.view(name))
        keys = [df[key][0] for key in ingest.view(name).entities]
        assert ingest.client.get(layout.key(keys)) is None  # the good row 0 was not written either


@pytest.mark.parametrize(
    ("name", "column", "values", "typed"),
    [
        ("rp_fixed", "score", [2**53, -(2**53)], [float(2**53), -float(2**53)]),  # the bounds themselves
        ("rp_fixed", "score", [0.5, -9.223372036854776e18], [0.5, -(2.0**63)]),  # the int64 minimum as a float
        ("rp_fixed", "visits", [1.0, -(2.0**63)], [1, -(2**63)]),  # a float that is the int64 minimum exactly
        ("rp_fixed", "shop_id", [1.0, -(2.0**63)], [1, -(2**63)]),  # an integer entity key, too
    ],
)
def test_edge_values_are_taken_alike_on_every_path(ingest, name, column, values, typed):
    """The edges of the accepted ranges: the same typed rows and bytes on both paths and from
    every shape (a float -2**63 in an integer column was refused from Python, taken from Arrow)."""
    df = edge_request(name, column, values)
    for shape, rows in shapes(df, values).items():
        batch, out = batch_path(ingest, name, rows, EDGE_NOW, EDGE_NOW_US)
        assert batch[0] == "written", (shape, batch)
        assert out[0].column(column).to_pylist() == typed, shape
        if shape in ("columns", "rows"):
            assert row_path(ingest, name, rows, EDGE_NOW, EDGE_NOW_US)[0] == batch, shape


def micros_of(text: str) -> int:
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def at_micros(micros: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("path", ["row", "batch"])
def test_write_newer_orders_event_times_at_the_stored_double_s_precision(two_prefixes, path):
    """docs/internals.md (the online layout): a full value holds its event time as a float64
    of microseconds, exact between 1685 and 2255. Outside, WRITE_NEWER compares the rounded
    times: two that round to the same double are equal, and the later write wins (as for
    equal times); rounding never inverts an order. A read gives the rounded time, clamped to
    the last microsecond of the year 9999."""
    _, batch, served = two_prefixes
    ingest = served if path == "row" else batch
    tag = uuid.uuid4().hex[:6]

    def push(key: str, at: int, score: float) -> tuple[int, int]:
        df = {"shop_id": [9], "region": [f"{key}-{tag}"], "event_ts": [at_micros(at)], "score": [score]}
        df |= {"visits": [1], "open": [True], "since": [None]}
        if path == "row":
            stats = ingest.push("rp_fixed", df, "online").online
        else:
            view, table, _ = ingest.prepare("rp_fixed", df, "online")
            stats = ingest.pusher().push_rows(view, table, ingest.layout(view))
        return stats.keys_written, stats.skipped_stale

    def read(key: str) -> tuple[float, int]:
        reader = OnlineReader(ingest.registry, ingest.client, ingest.key_prefix)
        response = reader.get([{"shop_id": 9, "region": f"{key}-{tag}"}], ["rp_fixed:score"])
        at = response.event_timestamps["rp_fixed"][0]
        return response.features["score"][0], (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    inside = micros_of("2200-01-01T00:00:00+00:00") + 1  # exact: 1 us apart are ordered
    assert push("inside", inside + 1, 1.0) == (1, 0) and push("inside", inside, 2.0) == (0, 1)
    assert read("inside") == (1.0, inside + 1)
    t = micros_of("2300-01-01T00:00:00+00:00")  # past 2**53 us: doubles 2 us apart
    assert t % 4 == 0 and float(t + 1) == float(t) and float(t + 3) == float(t + 4)
    # t + 1 and t round to the same double: the older event, pushed later, replaces the newer.
    assert push("tie", t + 1, 1.0) == (1, 0) and push("tie", t, 2.0) == (1, 0)
    assert read("tie") == (2.0, t)
    # t + 2 and t + 1 stay apart (t + 2 and t): the older is refused, as within the range.
    assert push("apart", t + 2, 1.0) == (1, 0) and push("apart", t + 1, 2.0) == (0, 1)
    assert read("apart") == (1.0, t + 2)
    assert push("up", t + 3, 1.0) == (1, 0) and read("up") == (1.0, t + 4)  # read back rounded up by 1 us
    last = micros_of("9999-12-31T23:59:59.999999+00:00")  # rounds up into the year 10000: read clamped
    assert push("last", last, 1.0) == (1, 0) and read("last") == (1.0, last)
    layout = ingest.layout(ingest.view("rp_fixed"))
    stored_last = ingest.client.get(layout.key([9, f"last-{tag}"]))
    assert layout.decode_row(stored_last)[0] == last and layout.decode_columns([stored_last] * 2)[0] == [last, last]


def test_a_lone_surrogate_in_an_entity_key_is_refused_on_read(two_prefixes):
    """The read side's key builder too (FeatureStore.get_online_features: HTTP and the CLI
    cannot send one): a RequestError naming the entity and row, not a UnicodeEncodeError."""
    _, _, served = two_prefixes
    reader = OnlineReader(served.registry, served.client, served.key_prefix)
    rows = [{"shop_id": 1, "region": "eu"}, {"shop_id": 2, "region": SURROGATE}]
    with pytest.raises(RequestError, match=re.escape(r"entity 'region' row 1: 'a\ud800b' is not valid text")):
        reader.get(rows, ["rp_fixed:score"])


@pytest.mark.parametrize("n", [2, SMALL_ROWS + 6], ids=["row path", "batch path"])
@pytest.mark.parametrize("forgotten", ["both scripts", "RAISE_NEWEST only"])
def test_post_push_raises_the_newest_event_time_by_sha_after_script_flush(project, private_redis, n, forgotten):  # noqa: F811
    """POST /push sends RAISE_NEWEST as it sends WRITE_NEWER: by its SHA1 (EVALSHA, never the
    script's text with EVAL on every request), loading it again when Redis has forgotten it
    (SCRIPT FLUSH, a restart), so the view's newest_event_time still moves. `RAISE_NEWEST
    only`: the writes find their script and only the raise meets NOSCRIPT."""
    url, _, _ = private_redis
    client = redis.Redis.from_url(url)
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", url, "fs-refactor", max_batch=100)
    ingest = Ingest(project, client, "fs-refactor")
    layout = ingest.layout(ingest.view("rp_text"))
    body = functools.partial(rp_text_body, n)

    start = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        for minute in range(3):
            at = start + timedelta(minutes=minute)
            reply = http.post("/push", content=body(at), headers={"content-type": "application/json"})
            assert reply.status_code == 200 and reply.json()["written"] == n, reply.text
            assert client.hget(layout.state_key, "newest_event_time") == at.isoformat(timespec="microseconds").encode()
            client.script_flush()
            if forgotten == "RAISE_NEWEST only":
                client.script_load(WRITE_NEWER)
    assert "cmdstat_eval" not in client.info("commandstats")
