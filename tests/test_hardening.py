"""Hostile and unlucky input, against real Redis, DuckDB, PostgreSQL and dbt (issue 11).

Every test here reproduces something that once went wrong: SQL run from a value stored in
Redis, data lost without an error (a row dated in the future, a Redis restarted mid-push,
columns changed without a new version), a traceback instead of a clear error (NOSCRIPT, a
malformed Redis URL, corrupt values), and the online validity bound disagreeing with the
point-in-time join at the exact instant. Destructive tests (kill, restart, flush) run on
a private redis-server; the others use their own key prefix on the shared one.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner

from conftest import delete_pushed_keys
from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.monitoring import drift as drift_lib
from featsync.monitoring import status as mstatus
from featsync.offline import training
from featsync.offline.warehouse import PostgresWarehouse, postgres_sqlalchemy_url
from featsync.online.connections import redis_client
from featsync.online.layout import StoredValueError
from featsync.online.prune import prune
from featsync.online.push import LostWritesError, Pusher, PushStats
from featsync.online.serving import EXPIRED, NOT_FOUND, PRESENT, OnlineReader
from featsync.online.state import StateError
from test_push import free_port, start_redis

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
H = timedelta(hours=1)
US = timedelta(microseconds=1)
# A watermark that, pasted into SQL, creates a table: it did on DuckDB before featsync bound it.
HOSTILE = "2000-01-01' as timestamp); create table pwned as select 42 as x; select cast('2000-01-01"

USERS = [("u1", NOW - H, NOW - H, 2, "y"), ("u2", NOW - H / 2, None, 3, "z")]
PAIRS = [("u1", "m1", NOW - 24 * H, 0.5), ("u1", "m|2", NOW - 24 * H, 1.25)]
PROFILES = [("u1", NOW - H, NOW + H, "gold")]


def seconds(t: datetime) -> float:
    return t.replace(tzinfo=UTC).timestamp()


def load(user=(), pair=(), profile=()) -> None:
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        for table, rows in (("user_rows", user), ("pair_rows", pair), ("profile_rows", profile)):
            con.execute(f"delete from {table}")
            if rows:
                con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", list(rows))


def duckdb_tables() -> set[str]:
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"], read_only=True) as con:
        return {name for (name,) in con.execute("select table_name from information_schema.tables").fetchall()}


@pytest.fixture(scope="module")
def project(pit_duckdb):
    return pit_duckdb


@pytest.fixture
def prefix(project, redis_url):
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_pushed_keys(project, redis.Redis.from_url(redis_url), prefix)


@pytest.fixture
def pusher(project, redis_url, prefix):
    return Pusher(project, redis.Redis.from_url(redis_url), key_prefix=prefix)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own on a free loopback port, which the test may kill or flush."""
    port = free_port()
    servers = [start_redis(port, tmp_path)]
    yield f"redis://127.0.0.1:{port}/0", servers, lambda: start_redis(port, tmp_path)
    for proc in servers:
        proc.kill()
        proc.wait()


def view(pusher: Pusher, name: str):
    return pusher.project.registry().feature_view(name)


def stored(pusher: Pusher, name: str, *key: str):
    layout = pusher.layout(view(pusher, name))
    value = pusher.client.get(layout.key(key))
    return None if value is None else layout.decode(value)


# -- 1. SQL injection from Redis into the warehouse ----------------------------------------


def test_a_hostile_watermark_is_refused_and_never_run(pusher, project, prefix, redis_url):
    load(USERS, PAIRS, PROFILES)
    state_key = pusher.state_key(view(pusher, "fv_user"))
    pusher.client.hset(state_key, "watermark", HOSTILE)
    with pytest.raises(StateError, match=rf"hash {state_key}, field 'watermark'\) is not a timestamp.*full refresh"):
        pusher.push(["fv_user"])
    options = ["--project-dir", str(project.project_dir), "--redis-url", redis_url, "--key-prefix", prefix]
    result = CliRunner().invoke(main, ["push", *options, "--select", "fv_user", "--skip-validation"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"hash {state_key}, field 'watermark'" in result.output and "(featsync push --full-refresh)" in result.output
    assert "pwned" not in duckdb_tables()
    (full,) = pusher.push(["fv_user"], full_refresh=True)  # ignores the garbage and replaces it
    assert full.full_refresh and full.keys_written == 2
    assert datetime.fromisoformat(pusher.state(view(pusher, "fv_user"))["watermark"]) == NOW - H / 2


def test_status_reports_hostile_state_without_running_it(pusher, project, prefix):
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user", "fv_pair"])
    pusher.client.hset(pusher.state_key(view(pusher, "fv_user")), "watermark", HOSTILE)
    pusher.client.hset(pusher.state_key(view(pusher, "fv_pair")), "last_push_at", "yesterday")
    results = {r.feature_view: r for r in mstatus.status(project, pusher.client, prefix, ["fv_user", "fv_pair"])}
    assert "pwned" not in duckdb_tables()
    assert "push state field 'watermark' is not a time" in results["fv_user"].breaches[0]  # as the UI says it
    assert "push state field 'last_push_at' is not a time: 'yesterday'" in results["fv_pair"].breaches[0]
    assert results["fv_user"].entities_offline == 2  # the warehouse side is still reported


@pytest.fixture
def pg_project(pit_postgres):
    return pit_postgres.project, pit_postgres.con


def test_a_hostile_watermark_never_reaches_postgres(pg_project, redis_url):
    project, con = pg_project
    with con.cursor() as cur:
        cur.execute("delete from user_rows")
        cur.executemany("insert into user_rows values (%s, %s, %s, %s, %s)", USERS)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    pusher = Pusher(project, redis.Redis.from_url(redis_url), key_prefix=prefix)
    try:
        pusher.push(["fv_user"])
        state_key = pusher.state_key(view(pusher, "fv_user"))
        hostile = "2000-01-01'::timestamp; create table pwned as select 42 as x; select '2000-01-01"
        pusher.client.hset(state_key, "watermark", hostile)
        with pytest.raises(StateError, match=f"hash {state_key}, field 'watermark'"):
            pusher.push(["fv_user"])
        (result,) = mstatus.status(project, pusher.client, prefix, ["fv_user"])
        assert "push state field 'watermark' is not a time" in result.breaches[0]
        pusher.client.hset(state_key, "watermark", (NOW - H).isoformat(sep=" "))  # a real one: bound as a typed literal
        (incremental,) = pusher.push(["fv_user"])
        assert not incremental.full_refresh and incremental.rows_read == 2
        with con.cursor() as cur:
            cur.execute("select count(*) from information_schema.tables where table_name = 'pwned'")
            assert cur.fetchone()[0] == 0
    finally:
        delete_pushed_keys(project, pusher.client, prefix)


def test_spine_relations_and_column_names_are_names_not_sql(project):
    with pytest.raises(FeatsyncError, match="is neither a .parquet or .csv file nor a relation name"):
        training.get_historical_features(
            project, "spine; create table pwned as select 1", training.TrainingSetRequest(features=["fv_user:amount"])
        )
    with pytest.raises(FeatsyncError, match="the spine timestamp 'ts, 1 as x' is not a plain column name"):
        training.TrainingSetRequest(features=["fv_user:amount"], spine_timestamp="ts, 1 as x")
    with pytest.raises(FeatsyncError, match="spine column of join key 'user_id'"):
        training.TrainingSetRequest(features=["fv_user:amount"], join_key_map={"user_id": "x) or (1=1"})
    assert "pwned" not in duckdb_tables()


def test_hostile_values_in_the_data_and_the_drift_window_stay_values(pusher, project, prefix):
    """Text that is SQL in entity keys and features travels as data through push, verify and
    drift; a drift window that is not two ISO timestamps is refused."""
    evil = "x'); drop table user_rows; --"
    rows = [(evil, NOW - H, None, 1, evil), ('y"|\\', NOW - H, None, 2, "'")]
    load(rows, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    assert stored(pusher, "fv_user", evil)[1] == {"amount": 1, "label": evil}
    from featsync.monitoring.verify import verify

    (checked,) = verify(project, pusher.client, prefix, ["fv_user"])
    assert checked.sampled == 2 and checked.mismatches == 0
    day = NOW.date()
    window = drift_lib.Window.parse(f"{day - timedelta(days=1)}T00:00:00Z..{day + timedelta(days=1)}T00:00:00Z")
    report = drift_lib.drift(project, "fv_user", window, window)
    assert report.reference_rows == 2 and "user_rows" in duckdb_tables()
    with pytest.raises(FeatsyncError, match="is not an RFC 3339 timestamp"):
        drift_lib.Window.parse("2024-01-01T00:00:00Z..2024-02-01T00:00:00Z' or 1=1 --")


# -- 4. the PostgreSQL connection string --------------------------------------------------


def test_postgres_passwords_with_url_characters_connect_and_never_leak(pg_dsn):
    """The local PostgreSQL trusts loopback, so any password logs in: what matters is that
    the connection string carries it intact instead of misreading '@' and '/' as URL parts."""
    password = "p@ss/w:rd%#? 'q\"\\"
    credentials = SimpleNamespace(
        host=pg_dsn["host"], port=pg_dsn["port"], user=pg_dsn["user"], password=password, database=pg_dsn["dbname"], schema="x"
    )
    warehouse = PostgresWarehouse(credentials)
    try:
        assert warehouse.fetch_arrow("select 1 as one").column("one").to_pylist() == [1]
    finally:
        warehouse.close()
    url = postgres_sqlalchemy_url(credentials)
    from sqlalchemy.engine import make_url

    assert make_url(url.render_as_string(hide_password=False)).password == password  # what GE's datasource gets
    unreachable = SimpleNamespace(**{**vars(credentials), "port": free_port(), "password": "s3cret-p@ss"})
    with pytest.raises(FeatsyncError, match="cannot connect to PostgreSQL") as failure:
        PostgresWarehouse(unreachable)
    assert "s3cret" not in str(failure.value)


# -- 5. one far-future row must not stop incremental pushes ------------------------------


def test_a_row_dated_in_the_future_never_stops_incremental_pushes(pusher, project, prefix):
    clock = NOW
    pusher.now = lambda: seconds(clock)
    load([*USERS, ("future", datetime(2999, 1, 1), None, 7, "f")], PAIRS, PROFILES)
    (first,) = pusher.push(["fv_user"])
    assert stored(pusher, "fv_user", "future")[1] == {"amount": 7, "label": "f"}  # its values are real: written
    state = pusher.state(view(pusher, "fv_user"))
    assert datetime.fromisoformat(state["watermark"]) == clock  # held at the clock
    assert datetime.fromisoformat(state["newest_event_time"]) == (NOW - H / 2).replace(tzinfo=UTC)  # freshness: not 2999
    assert first.future_rows == 1
    # A real change after the first push: created a minute after its clock.
    load([*USERS, ("future", datetime(2999, 1, 1), None, 7, "f"), ("late", clock - H / 6, clock + H / 60, 8, "n")])
    pusher.now = lambda: seconds(clock + H / 30)
    (second,) = pusher.push(["fv_user"])
    assert not second.full_refresh and second.rows_read == 2  # the new row, and the future one again
    assert stored(pusher, "fv_user", "late")[1] == {"amount": 8, "label": "n"}
    (result,) = mstatus.status(project, pusher.client, prefix, ["fv_user"], now=lambda: seconds(clock + H / 30))
    assert result.future_rows == 1 and "1 latest rows are dated in the future" in result.breaches[0]
    assert result.newest_event_time == (clock - H / 6).replace(tzinfo=UTC)  # the newest not after now
    assert result.lag_seconds == 0 and result.pending_rows == 1  # the future row: sent again until its time


def test_a_watermark_after_the_clock_means_a_full_push(pusher):
    """An older featsync stored the far-future marker itself; that watermark is ignored."""
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    pusher.client.hset(pusher.state_key(view(pusher, "fv_user")), "watermark", "2999-01-01 00:00:00.000000")
    (again,) = pusher.push(["fv_user"])
    assert again.full_refresh and again.rows_read == 2


# -- 6. a Redis that restarts empty (or is flushed) mid-push ------------------------------


def test_a_redis_restarted_empty_mid_push_is_not_marked_done(project, private_redis):
    url, servers, start = private_redis
    load(USERS, PAIRS, PROFILES)

    def restart(stats: PushStats) -> None:
        if stats.feature_view == "fv_pair":  # fv_user is done; fv_pair's batch is in flight
            servers[-1].kill()
            servers[-1].wait()
            servers.append(start())  # back at once, empty: it kept nothing on disk

    pusher = Pusher(project, redis_client(project, url), key_prefix="lost")
    with pytest.raises(LostWritesError, match=r"restarted or failed over while featsync pushed 'fv_pair'.*full one"):
        pusher.push(progress=restart)
    again = Pusher(project, redis_client(project, url), key_prefix="lost")
    assert again.state(view(again, "fv_pair")) == {}
    results = again.push()
    assert all(s.full_refresh for s in results) and sum(s.keys_written for s in results) == 5


def test_a_redis_flushed_mid_push_is_not_marked_done(project, private_redis):
    url, _, _ = private_redis
    load(USERS, PAIRS, PROFILES)
    pusher = Pusher(project, redis_client(project, url), key_prefix="flushed")
    pusher.push()
    flush = redis.Redis.from_url(url)
    with pytest.raises(LostWritesError, match="lost the view's push state.*'fv_user'"):
        pusher.push(["fv_user"], full_refresh=True, progress=lambda stats: flush.flushall())
    (rerun,) = pusher.push(["fv_user"])
    assert rerun.full_refresh and rerun.keys_written == 2


# -- 8. NOSCRIPT ---------------------------------------------------------------------------


def test_script_flush_mid_push_loads_the_script_again(project, private_redis):
    url, _, _ = private_redis
    load(USERS, PAIRS, PROFILES)
    pusher = Pusher(project, redis_client(project, url), key_prefix="noscript")
    pusher.push()  # keys exist now, so the full refresh below writes through the script
    flusher = redis.Redis.from_url(url)

    def flush(stats: PushStats) -> None:
        flusher.script_flush()

    before = dict(pusher.batches)
    results = {s.feature_view: s for s in pusher.push(full_refresh=True, progress=flush)}
    assert pusher.batches["set_nx"] == before["set_nx"] and pusher.batches["script"] >= before["script"] + 3
    assert sum(s.keys_written for s in results.values()) == 5
    assert stored(pusher, "fv_pair", "u1", "m|2")[1] == {"score": 1.25}


# -- 7. columns changed without a new version ------------------------------------------------


def test_changed_columns_get_new_keys_and_prune_removes_the_old(project, pusher, prefix, redis_url):
    models = project.project_dir / "models"
    yml, sql = models / "feature_views.yml", models / "fv_pair.sql"
    original_yml, original_sql = yml.read_text(), sql.read_text()
    score = "      - {name: score, data_type: float8}\n"
    boost = "      - {name: boost, data_type: float8}\n"
    key = [{"user_id": "u1", "merchant_id": "m|2"}]
    features = ["fv_pair:score", "fv_pair:boost"]
    try:
        load(USERS, PAIRS, PROFILES)
        pusher.push(["fv_pair"])
        # A column added, no new version: a full refresh wrote 0 keys and reads raised struct.error.
        sql.write_text(original_sql.replace("select *", "select *, score * 10 as boost"))
        yml.write_text(original_yml.replace(score, score + boost))
        project.run_dbt(["run", "--select", "fv_pair"])
        added = project.registry(refresh=True)
        (full,) = pusher.push(["fv_pair"], full_refresh=True)
        assert full.keys_written == 2 and full.skipped_stale == 0
        reader_added = OnlineReader(added, pusher.client, prefix)
        added_values = reader_added.get(key, features).to_dict()
        assert (added_values["score"], added_values["boost"]) == ([1.25], [12.5])
        # The same columns reordered, still no new version: values were silently swapped.
        yml.write_text(original_yml.replace(score, boost + score))
        reordered = project.registry(refresh=True)
        reader_reordered = OnlineReader(reordered, pusher.client, prefix)
        before = reader_reordered.get(key, features)
        assert before.statuses["score"] == [NOT_FOUND]  # new keys: the old bytes are never decoded in the new order
        pusher.push(["fv_pair"])
        after = reader_reordered.get(key, features).to_dict()
        assert (after["score"], after["boost"]) == ([1.25], [12.5])
        assert reader_added.get(key, features).to_dict()["score"] == [1.25]  # a reader on the old registry: old keys
        # Prune: the two superseded layouts, with their two keys each.
        orphans = prune(reordered, pusher.client, prefix, dry_run=True)
        assert [(o.identity, o.keys) for o in orphans] == [(f"{prefix}/fv_pair/v1", 2)] * 2
        assert {o.layout for o in orphans} == {"user_id,merchant_id;score:float", "user_id,merchant_id;score:float,boost:float"}
        options = ["--project-dir", str(project.project_dir), "--redis-url", redis_url, "--key-prefix", prefix, "--json"]
        result = CliRunner().invoke(main, ["prune", *options])
        assert result.exit_code == 0, result.output
        assert sorted(o["keys"] for o in json.loads(result.stdout)) == [2, 2]
        assert reader_added.get(key, features).statuses["score"] == [NOT_FOUND]
        assert reader_reordered.get(key, features).to_dict()["boost"] == [12.5]
        assert prune(reordered, pusher.client, prefix) == []
    finally:
        yml.write_text(original_yml)
        sql.write_text(original_sql)
        project.run_dbt(["run", "--select", "fv_pair"])
        prune(project.registry(refresh=True), pusher.client, prefix)  # the reordered layout's keys: not the fixture's


def test_prune_reports_a_state_key_that_is_not_a_hash_and_prunes_the_others(project, private_redis):
    """A string at a key shaped like a state hash made prune stop on WRONGTYPE (hmget): it names
    the key on stderr, leaves it, and still deletes the orphan ids of the prefix."""
    url, _, _ = private_redis
    client = redis.Redis.from_url(url)
    load(USERS, PAIRS, PROFILES)
    Pusher(project, client, key_prefix="p").push(["fv_user"])
    client.hset("fs:orphan01", mapping={"identity": "p/fv_gone/v1", "layout": "user_id;x:float"})
    client.set("fs:orphan01:u1", b"x")
    client.set("fs:notahash", b"someone else's")
    options = ["--project-dir", str(project.project_dir), "--redis-url", url, "--key-prefix", "p", "--json"]
    result = CliRunner().invoke(main, ["prune", *options])
    assert result.exit_code == 0, result.output
    assert [(o["identity"], o["keys"]) for o in json.loads(result.stdout)] == [("p/fv_gone/v1", 1)]
    assert "key fs:notahash" in result.stderr and "not a hash" in result.stderr and "redis-cli DEL fs:notahash" in result.stderr
    assert client.exists("fs:orphan01", "fs:orphan01:u1") == 0 and client.get("fs:notahash") == b"someone else's"
    assert client.exists(Pusher(project, client, key_prefix="p").state_key(project.registry().feature_view("fv_user")))


def test_prune_deletes_only_the_keys_under_an_orphan_id(project, prefix, redis_url):
    """A key that merely starts with an orphan id (fs:<id>BACKUP, someone else's) was counted and
    deleted with it: prune matched the id's width without the ':' that ends an id in a data key."""
    client = redis.Redis.from_url(redis_url)
    view_id = uuid.uuid4().hex[:8]
    state, data, foreign = f"fs:{view_id}", f"fs:{view_id}:u1", f"fs:{view_id}BACKUP"
    try:
        client.hset(state, mapping={"identity": f"{prefix}/fv_gone/v1", "layout": "user_id;x:float"})
        client.set(data, b"x")
        client.set(foreign, b"someone else's")
        (dry,) = prune(project.registry(), client, prefix, dry_run=True)
        assert (dry.view_id, dry.keys) == (view_id, 1)
        (orphan,) = prune(project.registry(), client, prefix)
        assert orphan.keys == 1
        assert client.exists(state, data) == 0 and client.get(foreign) == b"someone else's"
    finally:
        client.delete(state, data, foreign)


def test_prune_reports_redis_unreachable_or_refusing_credentials_in_one_line(project, tmp_path):
    """prune printed a traceback (ConnectionError, AuthenticationError) where status and verify
    print one error line, or {"error": ...} under --json, exit code 1."""
    port = free_port()
    server = start_redis(port, tmp_path, "--requirepass", "secret", password="secret")
    try:
        for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis://:wrong@127.0.0.1:{port}/0"):
            options = ["--project-dir", str(project.project_dir), "--redis-url", url, "--key-prefix", "p"]
            result = CliRunner().invoke(main, ["prune", *options])
            assert result.exit_code == 1, result.output
            assert result.stderr.startswith("error: cannot prune the online store: Redis failed")
            assert "Traceback" not in result.output and "wrong" not in result.stderr
            result = CliRunner().invoke(main, ["prune", *options, "--json"])
            assert result.exit_code == 1 and json.loads(result.stdout)["error"]["exit_code"] == 1, result.output
    finally:
        server.kill()
        server.wait()


def test_a_value_that_does_not_fit_the_layout_is_an_error_not_a_decode(project, pusher, prefix, redis_url):
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_pair", "fv_user"])
    reader = OnlineReader(project.registry(), pusher.client, prefix)
    pair = pusher.layout(view(pusher, "fv_pair"))
    user = pusher.layout(view(pusher, "fv_user"))
    many = [{"user_id": "u1", "merchant_id": f"n{i}"} for i in range(20)]
    for i, row in enumerate(many):  # 20 values: the vectorized path; lengths 11 and 13 would fill whole records
        pusher.client.set(pair.key([row["user_id"], row["merchant_id"]]), b"x" * (11 if i % 2 else 13))
    with pytest.raises(StoredValueError, match=r"feature view 'fv_pair' v1 .* 13 bytes, expected 17 or 12 bytes"):
        reader.get(many, ["fv_pair:score"])
    pusher.client.set(user.key(["u1"]), pusher.client.get(user.key(["u1"]))[:-1])  # a text cut short
    with pytest.raises(StoredValueError, match="fv_user"):
        reader.get([{"user_id": "u1"}], ["fv_user:label"])
    result = CliRunner().invoke(
        main,
        ["get", "--project-dir", str(project.project_dir), "--redis-url", redis_url, "--key-prefix", prefix]
        + ["--features", "fv_user:label", "--entity", "user_id=u1"],
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "does not fit its layout" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("event", [float("nan"), float("inf"), float("-inf"), -1e300, 1e300, -6.3e16])
@pytest.mark.parametrize("rows", [1, 3, 20])
def test_a_value_whose_event_time_featsync_never_writes_is_an_error_for_any_batch(project, pusher, prefix, event, rows):
    """A foreign value of the right length whose 8-byte event time is NaN, +-inf or outside the
    years 1 to 9999: a StoredValueError naming the view, one row or many (numpy's path from 16
    on). It was a ValueError or OverflowError (a 500 without a reason) for 1 to 15 rows,
    OUTSIDE_MAX_AGE for 16 or more (NaN cast to int64), and a FeatsyncError (a 400) quoting a
    300-digit number for -1e300 in a view without TTL."""
    import struct

    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_pair", "fv_user"])
    reader = OnlineReader(project.registry(), pusher.client, prefix)
    pair = pusher.layout(view(pusher, "fv_pair"))
    many = [{"user_id": "u1", "merchant_id": f"t{i}"} for i in range(rows)]
    full = struct.pack(">d", event) + b"\x00" + struct.pack("<d", 1.5)  # fv_pair's full form: 17 bytes
    for row in many:
        pusher.client.set(pair.key([row["user_id"], row["merchant_id"]]), full)
    with pytest.raises(StoredValueError, match=r"feature view 'fv_pair' v1 .* its event time is .* outside the years 1 to 9999"):
        reader.get(many, ["fv_pair:score"])
    user = pusher.layout(view(pusher, "fv_user"))  # a view with text: decode_row's path only
    stored = pusher.client.get(user.key(["u1"]))
    pusher.client.set(user.key(["u1"]), struct.pack(">d", event) + stored[8:])
    with pytest.raises(StoredValueError, match=r"feature view 'fv_user' v1 .* its event time is"):
        reader.get([{"user_id": "u1"}] * rows, ["fv_user:label"])


# -- crashes that must be clear errors ------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis://127.0.0.1:abc/0", "the port must be a number"),
        ("http://127.0.0.1:6379/0", "unknown scheme 'http'"),
        ("redis://:s3cret@127.0.0.1:6379/abc", "database 'abc' is not a number"),
        ("redis+cluster://127.0.0.1:7000/2", "a Redis Cluster has only database 0"),
    ],
)
def test_a_malformed_redis_url_is_a_clear_error(project, url, message):
    result = CliRunner().invoke(main, ["status", "--project-dir", str(project.project_dir), "--redis-url", url])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert message in result.output and "s3cret" not in result.output and "Traceback" not in result.output


def test_an_unreachable_redis_fails_before_the_suites_run(project, monkeypatch):
    import featsync.quality.gate as gate

    validated = []
    validate = gate.validate
    monkeypatch.setattr(gate, "validate", lambda *args, **kwargs: validated.append(args) or validate(*args, **kwargs))
    pusher = Pusher(project, redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1))
    with pytest.raises(FeatsyncError, match="cannot reach Redis at 127.0.0.1"):
        gate.gated_push(pusher, ["fv_user"])
    assert validated == []


# -- one validity rule: the join's, at the exact instant -----------------------------------


def test_online_validity_agrees_with_the_join_at_the_exact_bounds(project, pusher, prefix):
    """Microsecond event times and valid_to: at each instant a hair before, at and after the
    bound, the key is visible (PXAT, ms) only where the join still uses the value, and the
    read-time ttl check answers exactly as the join."""
    event = NOW - 2 * H + 1234 * US  # fv_user: ttl 3h, valid through event + 3h inclusive
    valid_to = NOW + H / 2 + 567 * US  # fv_profile: valid before valid_to (exclusive)
    load([("b", event, None, 5, "v")], PAIRS, [("b", NOW - H, valid_to, "gold")])
    ttl_end = event + 3 * H
    instants = [ttl_end - US, ttl_end, ttl_end + US, valid_to - US, valid_to, valid_to + US]
    spine = pa.table(
        {
            "spine_id": list(range(len(instants))),
            "user_id": ["b"] * len(instants),
            "ts": pa.array([t.replace(tzinfo=UTC) for t in instants], pa.timestamp("us", tz="UTC")),
        }
    )
    joined = training.get_historical_features(
        project, spine, training.TrainingSetRequest(features=["fv_user:amount", "fv_profile:tier"], spine_timestamp="ts")
    )
    rows = sorted(joined.to_pylist(), key=lambda r: r["spine_id"])
    offline = {"fv_user": [r["amount"] is not None for r in rows], "fv_profile": [r["tier"] is not None for r in rows]}
    assert offline["fv_user"][:3] == [True, True, False] and offline["fv_profile"][3:] == [True, False, False]

    pusher.now = lambda: seconds(NOW)
    pusher.push(["fv_user", "fv_profile"])
    micros = lambda t: int((t.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / US)  # noqa: E731
    for name, entity, end in (("fv_user", "b", micros(ttl_end) + 1), ("fv_profile", "b", micros(valid_to))):
        pxat = pusher.client.pexpiretime(pusher.layout(view(pusher, name)).key([entity]))
        assert pxat == end // 1000 - 1  # the last whole ms of validity
        for i, instant in enumerate(instants):
            if micros(instant) // 1000 <= pxat:  # Redis still serves the key at this instant
                assert offline[name][i], f"{name}: the key outlives the join at {instant}"
    reader = OnlineReader(project.registry(), pusher.client, prefix)
    for i, instant in enumerate(instants[:3]):
        reader.now = lambda t=instant: seconds(t)
        status = reader.get([{"user_id": "b"}], ["fv_user:amount"]).statuses["amount"][0]
        assert status == (PRESENT if offline["fv_user"][i] else EXPIRED)


# -- a hostile push state: newest_event_time, a key of another type, a flushed Redis --------

NOT_INSTANTS = [
    "0001-01-01T00:00:00+01:00",  # before the year 1 once in UTC (OverflowError)
    "2026-13-45T99:99:99.999999+00:00",  # featsync's shape, not a time
    "2026-02-30T00:00:00.000000+00:00",
    "garbage",
]


@pytest.mark.parametrize("hostile", [*NOT_INSTANTS, "9999-12-31T23:59:59.999999+00:00"])
def test_a_full_refresh_repairs_a_hostile_newest_event_time(pusher, hostile):
    """A newest_event_time that is not a time stops an incremental push with a StateError that
    says what repairs it; a far-future one (a real instant no featsync writer records: each
    stays at or before its own clock) only rises. A full refresh, which rewrites every key, sets
    it to the newest it wrote in both cases (it used to only raise it: nothing lowered 9999)."""
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    key = pusher.state_key(view(pusher, "fv_user"))
    pusher.client.hset(key, "newest_event_time", hostile)
    if hostile in NOT_INSTANTS:
        with pytest.raises(StateError, match=r"'newest_event_time'\) is not a timestamp.*A full refresh of the view ignores"):
            pusher.push(["fv_user"])
    else:
        pusher.push(["fv_user"])
        assert pusher.client.hget(key, "newest_event_time") == hostile.encode()
    (full,) = pusher.push(["fv_user"], full_refresh=True)
    state = pusher.state(view(pusher, "fv_user"))
    assert datetime.fromisoformat(state["newest_event_time"]) == (NOW - H / 2).replace(tzinfo=UTC)
    (again,) = pusher.push(["fv_user"])
    assert not again.full_refresh


def test_a_full_refresh_keeps_a_newer_pushed_row_s_newest_event_time(pusher):
    """The repair's rule keeps what pushed rows recorded meanwhile: a real instant not after the
    clock as the full refresh saves stays when it is newer than the warehouse's rows."""
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    pushed = (datetime.now(UTC) - H / 6).replace(microsecond=0)  # a row pushed through the API since
    pusher.push_rows(
        view(pusher, "fv_user"), pa.table({"user_id": ["api"], "event_timestamp": [pushed], "amount": [1], "label": ["a"]})
    )
    pusher.push(["fv_user"], full_refresh=True)
    assert datetime.fromisoformat(pusher.state(view(pusher, "fv_user"))["newest_event_time"]) == pushed


def test_pushed_rows_replace_a_newest_event_time_that_is_not_a_time(pusher):
    """RAISE_NEWEST keeps a stored value only when it is a real instant in featsync's shape: a
    month 13 or a February 30th (which match the shape) used to stay for ever."""
    fv_user = view(pusher, "fv_user")
    key = pusher.state_key(fv_user)
    row = pa.table({"user_id": ["r"], "event_timestamp": [NOW - H], "amount": [1], "label": ["a"]})
    for hostile in NOT_INSTANTS:
        pusher.client.hset(key, "newest_event_time", hostile)
        pusher.push_rows(fv_user, row)
        assert datetime.fromisoformat(pusher.client.hget(key, "newest_event_time").decode()) == (NOW - H).replace(tzinfo=UTC)
    pusher.client.hset(key, "newest_event_time", "2024-02-29T23:59:59.999999+00:00")  # a real one, newer: kept
    pusher.push_rows(fv_user, row.set_column(1, "event_timestamp", pa.array([datetime(2024, 2, 1)])))
    assert pusher.client.hget(key, "newest_event_time") == b"2024-02-29T23:59:59.999999+00:00"


def test_a_state_key_of_another_type_is_a_clear_error(pusher, project, prefix, redis_url):
    """The view's state key holds a string (WRONGTYPE): `featsync push` fails with a message naming
    the key and what to do (it died with a traceback), `featsync status` reports it as the view's
    breach; deleting the key repairs it (the next push is a full one)."""
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    key = pusher.state_key(view(pusher, "fv_user"))
    pusher.client.delete(key)
    pusher.client.set(key, "not a hash")
    options = ["--project-dir", str(project.project_dir), "--redis-url", redis_url, "--key-prefix", prefix]
    for extra in ([], ["--full-refresh"]):
        result = CliRunner().invoke(main, ["push", *options, "--select", "fv_user", "--skip-validation", *extra])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"(key {key}) is not a hash" in result.output and f"redis-cli DEL {key}" in result.output
        assert "--full-refresh)" not in result.output  # a full refresh would not repair it
    (status,) = mstatus.status(project, pusher.client, prefix, ["fv_user"])
    assert f"(key {key}) is not a hash" in status.breaches[0]
    assert pusher.client.get(key) == b"not a hash"
    pusher.client.delete(key)
    (again,) = pusher.push(["fv_user"])
    assert again.full_refresh and again.keys_written == 2


def test_pushed_rows_after_a_flush_record_the_view_s_owner_again(project, private_redis):
    """A writer that checked the view's owner once (the server's POST /push, the stream consumer)
    does not check it again; after a flush (or a restart empty) its first raise of
    newest_event_time recreates the state hash, and records identity and layout with it, so
    collision checks and `featsync prune` still know whose id it is (it used to record neither)."""
    from starlette.testclient import TestClient

    from featsync.online.server import ServeConfig, create_app

    url, _, _ = private_redis
    client = redis.Redis.from_url(url)
    layout = Pusher(project, client, key_prefix="flushed").layout(project.registry().feature_view("fv_user"))
    at = (datetime.now(UTC) - H).isoformat()
    body = {"push_source_name": "fv_user", "df": {"user_id": ["f1"], "event_timestamp": [at], "amount": [1], "label": ["x"]}}
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "duckdb", url, "flushed")
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        assert http.post("/push", json=body).status_code == 200
        client.flushall()
        reply = http.post("/push", json=body)
        assert reply.status_code == 200 and reply.json()["written"] == 1, reply.text
    assert client.hmget(layout.state_key, "identity", "layout") == [layout.identity.encode(), layout.schema.encode()]
    pusher = Pusher(project, client, key_prefix="flushed")  # the batch path's writer (stream, push --rows) too
    row = pa.table({"user_id": ["f2"], "event_timestamp": [NOW - H], "amount": [2], "label": ["y"]})
    pusher.push_rows(view(pusher, "fv_user"), row)
    client.flushall()
    pusher.push_rows(view(pusher, "fv_user"), row)
    assert client.hmget(layout.state_key, "identity", "layout") == [layout.identity.encode(), layout.schema.encode()]
