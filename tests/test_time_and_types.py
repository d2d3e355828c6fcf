"""Timestamps as real data has them, through every CLI path: push, get, serve, verify, status,
drift and training-set, on feature views whose times have second, millisecond, microsecond and
nanosecond precision or a time zone (tests/types_project, featsync used as a package), in
sessions whose time zone is not UTC (DuckDB: America/New_York in the profile; PostgreSQL: PGTZ).

Online, times are UTC microseconds rounded down (featsync.online.layout): a nanosecond event
time comes back as its microsecond floor, everywhere, and the point-in-time answers stay the
ones the warehouse gives at nanoseconds.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

from conftest import TYPES_PRECISIONS, build_types_project, delete_pushed_keys, types_duckdb_execute
from featsync.cli import main
from featsync.errors import USAGE_EXIT
from featsync.online.layout import online_values

FRACTION = {"s": "", "ms": ".123", "us": ".123456", "ns": ".123456789", "tz": ".123456"}
OLDER, NEWER, EARLY = (
    "2024-02-15 12:00:00",
    "2024-03-10 06:59:59",
    "1969-12-31 23:59:59",
)  # NEWER: just before New York's DST change


def instant(text: str, precision: str) -> datetime:
    """The UTC instant a stored literal means, at microseconds rounded down (what online holds)."""
    fraction = FRACTION[precision][:7]
    return datetime.fromisoformat(text + fraction).replace(tzinfo=UTC)


def literal(text: str, precision: str) -> str:
    """The SQL literal of a time in a view's table: zoned ones written in New York's offset."""
    value = text + FRACTION[precision]
    if precision != "tz":
        return f"'{value}'"
    at = datetime.fromisoformat(value).replace(tzinfo=UTC).astimezone(timezone_of(-5))
    return f"'{at.isoformat()}'"


def timezone_of(hours: int):
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def load(execute, target: str) -> None:
    """e1: an older and a newer row; e2: one row just before 1970, with NULLs."""
    for precision, types in TYPES_PRECISIONS.items():
        if types[target] is None:
            continue
        table = f"rows_{precision}"
        execute(f"delete from {table}")
        for key, at, amount, n, flag, note in [
            ("e1", OLDER, "2.5", "1", "false", "'old'"),
            ("e1", NEWER, "'-0.0'", str(2**62), "true", "'é|\\x'"),
            ("e2", EARLY, "null", "-1", "false", "null"),
        ]:
            created = f"'{at}', " if precision == "tz" else ""  # naive UTC, beside zoned times
            execute(
                f"insert into {table} values ('{key}', {literal(at, precision)}, {created}{literal(at, precision)}, "
                f"cast({amount} as double precision), {n}, {flag}, {note})"
            )


def expected(precision: str, key: str) -> dict:
    at = instant(NEWER if key == "e1" else EARLY, precision)
    if key == "e1":
        return {"seen_at": at, "amount": -0.0, "n": 2**62, "flag": True, "note": "é|\\x", "event": at}
    return {"seen_at": at, "amount": None, "n": -1, "flag": False, "note": None, "event": at}


def cli(project, target: str, *args: str):
    return CliRunner().invoke(main, [*args, "--project-dir", str(project.project_dir), "--target", target])


class Pushed:
    def __init__(self, project, target, redis_url, prefix, precisions):
        self.project, self.target, self.redis_url, self.prefix, self.precisions = project, target, redis_url, prefix, precisions

    def run(self, *args: str, online: bool = True):
        extra = ["--redis-url", self.redis_url, "--key-prefix", self.prefix] if online else []
        return cli(self.project, self.target, *args, *extra)


def push_all(project, target, redis_url) -> Pushed:
    precisions = [p for p, t in TYPES_PRECISIONS.items() if t[target]]
    pushed = Pushed(project, target, redis_url, f"featsync-test-{uuid.uuid4().hex[:8]}", precisions)
    result = pushed.run("push", "--skip-validation", "--json")
    assert result.exit_code == 0, result.output
    stats = {s["feature_view"]: s for s in json.loads(result.stdout)}
    for precision in precisions:
        assert (stats[f"fv_{precision}"]["rows_read"], stats[f"fv_{precision}"]["keys_written"]) == (2, 2)
    return pushed


@pytest.fixture(scope="module")
def duck(types_duckdb, redis_url):
    load(types_duckdb_execute, "duckdb")
    pushed = push_all(types_duckdb, "duckdb", redis_url)
    yield pushed
    delete_pushed_keys(types_duckdb, redis.Redis.from_url(redis_url), pushed.prefix)


@pytest.fixture(scope="module")
def pg(tmp_path_factory, pg_dsn, redis_url):
    """tests/types_project on PostgreSQL, every connection (dbt's, featsync's) in New York time (PGTZ)."""
    import psycopg2

    schema = f"featsync_types_{uuid.uuid4().hex[:8]}"
    saved = {k: os.environ.get(k) for k in ("FEATSYNC_TYPES_PG_SCHEMA", "PGTZ")}
    os.environ.update(FEATSYNC_TYPES_PG_SCHEMA=schema, PGTZ="America/New_York")
    con = psycopg2.connect(**pg_dsn, options=f"-c search_path={schema}")
    con.autocommit = True

    def execute(sql: str) -> None:
        with con.cursor() as cur:
            cur.execute(sql)

    try:
        execute(f'create schema "{schema}"')
        project = build_types_project(tmp_path_factory.mktemp("types-pg"), "postgres", execute)
        load(execute, "postgres")
        pushed = push_all(project, "postgres", redis_url)
        yield pushed
        delete_pushed_keys(project, redis.Redis.from_url(redis_url), pushed.prefix)
    finally:
        execute(f'drop schema if exists "{schema}" cascade')
        con.close()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


SPARK_SCHEMA = "featsync_types"  # tests/types_project/profiles.yml


def spark_load(spark_session) -> None:
    """load()'s rows on Spark, written as parquet tables through DataFrames (Spark's string
    literals unescape backslashes): fv_us's times TIMESTAMP_NTZ, fv_tz's TIMESTAMP_LTZ written
    in New York's offset, its created_at naive."""
    for precision in ("us", "tz"):
        rows = []
        for key, at, amount, n, flag, note in [
            ("e1", OLDER, 2.5, 1, False, "old"),
            ("e1", NEWER, -0.0, 2**62, True, "é|\\x"),
            ("e2", EARLY, None, -1, False, None),
        ]:
            ts = datetime.fromisoformat(at + FRACTION[precision])
            if precision == "tz":
                ts = ts.replace(tzinfo=UTC).astimezone(timezone_of(-5))
            created = [datetime.fromisoformat(at)] if precision == "tz" else []
            rows.append((key, ts, *created, ts, amount, n, flag, note))
        ts_type = TYPES_PRECISIONS[precision]["spark"]
        created_type = "created_at timestamp_ntz, " if precision == "tz" else ""
        schema = (
            f"entity_id string, event_timestamp {ts_type}, {created_type}seen_at {ts_type}, "
            "amount double, n bigint, flag boolean, note string"
        )
        frame = spark_session.createDataFrame(rows, schema)
        frame.write.mode("overwrite").format("parquet").saveAsTable(f"{SPARK_SCHEMA}.rows_{precision}")


@pytest.fixture(scope="module")
def spark(tmp_path_factory, spark_session, redis_url):
    """tests/types_project on Spark (fv_us and fv_tz; Spark keeps microseconds), dbt and
    featsync in a session whose time zone is New York (its profile sets it); UTC again after."""
    zone = spark_session.conf.get("spark.sql.session.timeZone")
    spark_session.sql(f"create schema if not exists {SPARK_SCHEMA}")
    try:
        spark_load(spark_session)
        # The tables are there with their rows: nothing for build_types_project to create.
        project = build_types_project(tmp_path_factory.mktemp("types-spark"), "spark", lambda sql: None)
        pushed = push_all(project, "spark", redis_url)
        yield pushed
        delete_pushed_keys(project, redis.Redis.from_url(redis_url), pushed.prefix)
    finally:
        spark_session.sql(f"drop schema if exists {SPARK_SCHEMA} cascade")
        spark_session.conf.set("spark.sql.session.timeZone", zone)


@pytest.fixture(params=["duckdb", "postgres", "spark"])
def engine(request):
    return request.getfixturevalue({"duckdb": "duck", "postgres": "pg", "spark": "spark"}[request.param])


def test_get_returns_every_precision_as_utc_microseconds(engine):
    features = [arg for p in engine.precisions for arg in ("--features", f"fv_{p}:*")]
    for key in ("e1", "e2"):
        result = engine.run("get", *features, "--entity", f"entity_id={key}", "--full-feature-names", "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        for precision in engine.precisions:
            want = expected(precision, key)
            got = {name: data[f"fv_{precision}__{name}"][0] for name in ("seen_at", "amount", "n", "flag", "note")}
            assert got == {**{k: v for k, v in want.items() if k != "event"}, "seen_at": str(want["seen_at"])}, precision
            assert data[f"fv_{precision}__amount__status"] == ["present"]
        assert json.dumps(data)  # strict JSON


def test_serve_returns_every_precision(duck):
    from test_server import start_server, stop

    proc, base = start_server(duck.project, duck.redis_url, duck.prefix)
    try:
        body = {
            "features": [f"fv_{p}:seen_at" for p in duck.precisions],
            "entities": {"entity_id": ["e1", "e2"]},
            "full_feature_names": True,
        }
        response = httpx.post(f"{base}/get-online-features", json=body, timeout=30).json()
    finally:
        stop(proc)
    results = dict(zip(response["metadata"]["feature_names"], response["results"], strict=True))
    for precision in duck.precisions:
        column = results[f"fv_{precision}__seen_at"]
        times = [expected(precision, key)["event"] for key in ("e1", "e2")]
        assert column["event_timestamps"] == [t.isoformat().replace("+00:00", "Z") for t in times]
        assert [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in column["values"]] == times


def test_verify_and_status_agree_at_every_precision(engine):
    result = engine.run("verify", *(a for p in engine.precisions for a in ("--select", f"fv_{p}")), "--json")
    assert result.exit_code == 0, result.output
    for view in json.loads(result.stdout):
        assert view["sampled"] == 2 and view["breaches"] == [], view
    result = engine.run("status", "--json", "--no-count-keys")
    data = {v["feature_view"]: v for v in json.loads(result.stdout)}
    for precision in engine.precisions:
        newest = expected(precision, "e1")["event"].isoformat().replace("+00:00", "Z")
        assert data[f"fv_{precision}"]["newest_event_time"] == newest
        # The watermark is the change marker: fv_tz's created_at (naive, whole seconds), else the event time.
        marker = NEWER.replace(" ", "T") + "Z" if precision == "tz" else newest
        assert data[f"fv_{precision}"]["watermark"] == marker, data[f"fv_{precision}"]


def test_status_compares_zoned_event_times_as_instants(engine):
    """`now` two hours before fv_tz's newest row, in a New York session: that row is after now
    (its instant is), so the newest event time not after now is e2's. Comparing the zoned column
    with a naive bound would convert the bound in the session's zone and count the row as past."""
    from featsync.monitoring.status import status

    now = instant(NEWER, "tz") - timedelta(hours=2)
    client = redis.Redis.from_url(engine.redis_url)
    [view] = status(engine.project, client, engine.prefix, select=["fv_tz"], count_keys=False, now=now.timestamp)
    assert view.future_rows == 1
    assert view.newest_event_time == instant(EARLY, "tz")


@pytest.mark.parametrize(
    "target, precision", [*(("duckdb", p) for p in TYPES_PRECISIONS), ("spark", "tz")]
)  # fmt: skip
def test_drift_reads_every_precision(request, target, precision):
    duck = request.getfixturevalue("duck" if target == "duckdb" else "spark")
    result = duck.run(
        "drift",
        "--feature-view",
        f"fv_{precision}",
        "--reference",
        "2024-02-01T00:00:00Z..2024-03-01T00:00:00Z",
        "--current",
        "2024-03-10T06:00:00-05:00..2024-04-01T00:00:00Z",  # starts 11:00 UTC: after NEWER, so empty ...
        "--json",
        online=False,
    )
    assert result.exit_code == 1 and "holds no rows" in result.output  # ... which proves the bound is the instant
    result = duck.run(
        "drift",
        "--feature-view",
        f"fv_{precision}",
        "--reference",
        "2024-02-01T00:00:00Z..2024-03-01T00:00:00Z",
        "--current",
        "2024-03-10T01:00:00-05:00..2024-04-01T00:00:00Z",
        "--json",
        online=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["reference_rows"], report["current_rows"]) == (1, 1)
    assert {f["feature"]: f["kind"] for f in report["features"]}["seen_at"] == "numeric"


def epoch_ns(text: str, fraction: str = "") -> int:
    """Nanoseconds since 1970 of a UTC wall-clock time with a decimal fraction of a second."""
    whole = datetime.fromisoformat(text).replace(tzinfo=UTC)
    seconds = int((whole - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 10**9 + int((fraction.lstrip(".") + "000000000")[:9])


@pytest.mark.parametrize("unit, zone", [("ns", "Asia/Kathmandu"), ("s", "UTC")])
def test_training_set_keeps_the_spine_type_and_agrees_with_get(engine, tmp_path, unit, zone):
    """Spine times one unit before e1's newer row (per view: older row or newer row, exactly as
    the times compare at nanoseconds) and at e2's row (inclusive); the spine keeps its type."""
    if engine.target in ("postgres", "spark") and unit == "ns":
        unit = "us"  # PostgreSQL and Spark keep microseconds (a spine with nanoseconds is refused: tested below)
    step = {"ns": 1, "us": 1000, "s": 10**9}[unit]
    later = epoch_ns("2024-04-01 00:00:00")
    just_before = epoch_ns(NEWER, FRACTION["ns"]) - step if unit != "s" else epoch_ns(NEWER) - step
    at_early = epoch_ns(EARLY, FRACTION["ns"]) if unit != "s" else epoch_ns(EARLY)
    at_early -= at_early % step
    just_before -= just_before % step
    times = [later, just_before, at_early, later]
    spine = pa.table(
        {
            "entity_id": ["e1", "e1", "e2", "nobody"],
            "ts": pa.array([t // step for t in times], pa.int64()).cast(pa.timestamp(unit)).cast(pa.timestamp(unit, tz=zone)),
        }
    )
    pq.write_table(spine, tmp_path / "spine.parquet")
    features = [arg for p in engine.precisions for arg in ("--features", f"fv_{p}:*")]
    out = tmp_path / "train.parquet"
    result = engine.run(
        "training-set", *features, "--spine", str(tmp_path / "spine.parquet"), "--spine-timestamp", "ts",
        "--full-feature-names", "--out", str(out), online=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    # The spine's own type (parquet itself keeps seconds as milliseconds).
    assert table.schema.field("ts").type == pq.read_schema(tmp_path / "spine.parquet").field("ts").type
    assert table.schema.field("ts").type.tz == zone
    spine_ns = table.column("ts").combine_chunks().cast(pa.timestamp("ns", tz=zone)).cast(pa.int64()).to_pylist()
    rows = [{name: online_values(table.column(name))[i] for name in table.column_names} for i in range(table.num_rows)]
    assert sorted(spine_ns) == sorted(times)
    for row, t in zip(rows, spine_ns, strict=True):
        for precision in engine.precisions:
            older, newer, early = (epoch_ns(at, FRACTION[precision]) for at in (OLDER, NEWER, EARLY))
            got = {k: row[f"fv_{precision}__{k}"] for k in ("seen_at", "amount", "n", "note")}
            if row["entity_id"] == "nobody" or (row["entity_id"] == "e2" and early > t):
                assert got == dict.fromkeys(got), (precision, row)
            elif row["entity_id"] == "e2":
                assert got == {k: expected(precision, "e2")[k] for k in got}, (precision, row)
            elif newer <= t:  # what get returns for e1
                assert got == {k: expected(precision, "e1")[k] for k in got}, (precision, row)
            else:
                assert older <= t and got["n"] == 1, (precision, row)


@pytest.mark.parametrize("target, name", [("postgres", "PostgreSQL"), ("spark", "Spark")])
def test_spine_nanoseconds_are_refused_where_the_engine_keeps_microseconds(request, tmp_path, target, name):
    engine = request.getfixturevalue({"postgres": "pg", "spark": "spark"}[target])
    spine = pa.table({"entity_id": ["e1"], "ts": pa.array([1_700_000_000_000_000_001], pa.timestamp("ns", tz="UTC"))})
    pq.write_table(spine, tmp_path / "spine.parquet")
    result = engine.run(
        "training-set", "--features", "fv_us:n", "--spine", str(tmp_path / "spine.parquet"), "--spine-timestamp", "ts",
        "--out", str(tmp_path / "t.parquet"), online=False,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"spine column 'ts' has nanoseconds, which {name} does not keep" in result.output


def test_push_refuses_times_outside_years_1_to_9999(types_duckdb, redis_url):
    types_duckdb_execute("delete from rows_us")
    types_duckdb_execute("insert into rows_us values ('far', '10000-01-01 00:00:00', '2024-01-01', 1, 1, true, 'x')")
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    try:
        result = cli(types_duckdb, "duckdb", "push", "--select", "fv_us", "--skip-validation", "--redis-url", redis_url,
                     "--key-prefix", prefix)  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "feature view 'fv_us': column 'event_timestamp' holds 10000-01-01 00:00:00.000000 in the row " in result.output
        assert "(entity_id='far', event_timestamp=10000-01-01 00:00:00.000000)" in result.output
        assert "the years 1 to 9999 only" in result.output and "Traceback" not in result.output
    finally:
        load(types_duckdb_execute, "duckdb")
        delete_pushed_keys(types_duckdb, redis.Redis.from_url(redis_url), prefix)  # the state hash the push claimed


def test_types_project_uses_featsync_only_as_a_package():
    root = Path(__file__).parent / "types_project"
    assert not (root / "macros").exists() and not (root / "packages.yml").exists()  # written by the tests: local package/


@pytest.mark.parametrize("target", ["duckdb", "spark"])
def test_on_demand_date_parts_of_zoned_times_are_utc_offline_and_online(request, tmp_path, target):
    """extract(hour ...) of a zoned feature and of a zoned request field is the UTC hour, in the
    training set (a New York DuckDB or Spark session) and online: 06 for e1's 06:59:59Z."""
    duck = request.getfixturevalue("duck" if target == "duckdb" else "spark")
    at = datetime(2024, 3, 10, 23, 30, tzinfo=UTC)  # 19:30 in New York, 05:15 the next day in Kathmandu
    spine = pa.table(
        {
            "entity_id": ["e1"],
            "ts": pa.array([datetime(2024, 4, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "asked_at": pa.array([at], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz="Asia/Kathmandu")),
        }
    )
    pq.write_table(spine, tmp_path / "spine.parquet")
    out = tmp_path / "train.parquet"
    result = duck.run(
        "training-set", "--service", "zoned_hours", "--spine", str(tmp_path / "spine.parquet"), "--spine-timestamp", "ts",
        "--out", str(out), online=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = pq.read_table(out).to_pylist()[0]
    assert (row["seen_hour"], row["asked_hour"]) == (6, 23)
    result = duck.run(
        "get", "--service", "zoned_hours", "--entity", "entity_id=e1", "--request", f"asked_at={at.isoformat()}", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["seen_hour"], data["asked_hour"]) == ([6], [23])


# One rule for a time a user gives as text (featsync.times, docs/time-and-types.md "Where a
# time comes in from outside"): the same text means the same instant, or is refused for the
# same reason, at every entry point.
TEXT_TIMES = [
    ("2024-03-01t10:00:00.123456789z", datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)),  # lower case, ns cut
    ("2024-03-01T10:00:00.9999999+01:00", datetime(2024, 3, 1, 9, 0, 0, 999999, tzinfo=UTC)),  # floored, never up
    ("2016-12-31T23:59:60Z", "'2016-12-31T23:59:60Z' is a leap second (:60)"),
    ("2024-03-01T10:00:00", "'2024-03-01T10:00:00' has no time zone; featsync times are UTC, write e.g. 2024-03-01T10:00:00Z"),
    ("2024-03-01", "'2024-03-01' has no time zone; featsync times are UTC, write e.g. 2024-03-01T00:00:00Z"),
    ("0001-01-01T00:00:00+05:00", "is outside the years 1 to 9999 once converted to UTC"),  # year 0 in UTC
]


def _request_field(project, text: str):
    from featsync.ondemand.compiler import RequestField

    return RequestField("ts", "timestamptz", "timestamp").coerce(text)  # request_data (HTTP, Python) and --request


def _now(project, text: str):
    from featsync.quality.validate import resolve_now

    return resolve_now(text)  # --now / FEATSYNC_NOW


def _window_start(project, text: str):
    from featsync.monitoring.drift import Window

    return Window.parse(f"{text}..9999-01-01T00:00:00Z", "--reference").start  # drift windows


def _pushed(project, text: str):
    from featsync.online.rows import conform

    view = next(v for v in project.registry().feature_views.values() if v.online)
    row = {c.name: None for c in view.columns} | dict.fromkeys(view.entities, "k") | {view.timestamp: text}
    return conform(view, [row]).column(view.timestamp)[0].as_py()  # pushed rows, push --rows CSV, the stream


@pytest.mark.parametrize("text, expected", TEXT_TIMES)
@pytest.mark.parametrize(
    "entry, where",
    [
        (_request_field, "request field 'ts'"),
        (_now, "now (--now / FEATSYNC_NOW)"),
        (_window_start, "--reference"),
        (_pushed, "row 0"),
    ],
)
def test_every_entry_point_reads_text_times_by_one_rule(types_duckdb, entry, where, text, expected):
    from featsync.errors import FeatsyncError

    if isinstance(expected, datetime):
        assert entry(types_duckdb, text) == expected
        return
    with pytest.raises(FeatsyncError) as info:
        entry(types_duckdb, text)
    message = str(info.value)
    # Pushed rows word a missing zone or a bad year their own way (naming the row and column).
    assert where in message and (expected in message or (entry is _pushed and "leap" not in expected)), message


def test_cli_now_follows_the_rule_and_names_the_option(types_duckdb):
    project = ["--project-dir", str(types_duckdb.project_dir), "--profiles-dir", str(types_duckdb.profiles_dir)]
    result = CliRunner().invoke(main, ["validate", *project, "--now", "2016-12-31T23:59:60Z"])
    output = result.output
    assert result.exit_code == USAGE_EXIT and "--now" in output and "is a leap second (:60)" in output, output
    result = CliRunner().invoke(main, ["validate", *project, "--now", "2024-04-30T00:00:00"])
    assert result.exit_code == USAGE_EXIT and "has no time zone" in result.output, result.output
