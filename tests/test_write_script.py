"""WRITE_NEWER's check of stored values (Layout.value_shape) against every value featsync writes.

The write script refuses a whole call when a stored value does not fit the view's layout
(FEATSYNC_FOREIGN_VALUE). A false positive there would break every later write of that key,
so hypothesis draws views of 0 to 17 features of every kind (the null bitmap's 0 to 3 bytes and
its high-bit bound), rows with NULLs anywhere, empty, long and prefix-like texts, unicode,
every event-time edge (years 1 and 9999, before 1970, whole seconds in and past the compact
form's range, +-2**53), +-0.0, NaN, inf and the int64 edges; writes them through both framings
(pack_writes for the batch path, SmallRows.script_call for the row path) and then newer and
older rows over them, and checks that nothing is called foreign, the counts, and that the
stored bytes are the winner's, which decode to what was pushed.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pyarrow as pa
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featsync.online.layout import MAX_MICROS, MIN_MICROS, Layout
from featsync.online.push import ForeignValueError, Pusher, PushStats, Rows, refused
from featsync.online.row_push import SmallRows
from featsync.registry import Column, FeatureView
from test_cluster import cluster  # noqa: F401 (fixture)
from test_hardening import private_redis  # noqa: F401 (fixture)

DATA_TYPES = {"int": "bigint", "float": "double", "bool": "boolean", "text": "text", "timestamp": "timestamp"}
KINDS = tuple(DATA_TYPES)
INT64 = (-(2**63), 2**63 - 1)
COMPACT_END = 2**32 * 1_000_000  # the compact form holds whole seconds from 1970 below this
TIME_EDGES = (
    MIN_MICROS,
    MIN_MICROS + 1,
    MAX_MICROS,
    MAX_MICROS - 1,
    MAX_MICROS - 999_999,  # a whole second, beyond the compact form
    0,
    -1,
    1,
    -1_000_000,
    1_000_000,
    COMPACT_END - 1_000_000,  # the last compact second
    COMPACT_END,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
)


def make_view(kinds: list[str]) -> FeatureView:
    columns = [Column("user_id", "text"), Column("event_timestamp", "timestamp")]
    columns += [Column(f"f{i}", DATA_TYPES[kind]) for i, kind in enumerate(kinds)]
    return FeatureView(
        name="fv_shape",
        unique_id="model.t.fv_shape",
        package="t",
        relation="fv_shape",
        entities=("user_id",),
        timestamp="event_timestamp",
        created_timestamp=None,
        valid_to=None,
        ttl_seconds=None,
        online=True,
        version=1,
        owner=None,
        tags={},
        description="",
        columns=tuple(columns),
        file="",
    )


times = st.one_of(
    st.sampled_from(TIME_EDGES),
    st.integers(MIN_MICROS, MAX_MICROS),
    st.integers(MIN_MICROS // 1_000_000 + 1, 2**33).map(lambda s: s * 1_000_000),  # whole seconds around the compact range
)
texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\x00\x00\x00\x00", "\x04\x00\x00\x00abcd", "\xff" * 4, "\uffff\U0010ffff", "x" * 70_000]),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
)
FEATURE_VALUES = {
    "int": st.one_of(st.sampled_from(INT64), st.integers(*INT64)),
    "float": st.one_of(st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]), st.floats()),
    "bool": st.booleans(),
    "text": texts,
    "timestamp": times,
}


@st.composite
def cases(draw):
    size = draw(st.sampled_from([0, 1, 2, 7, 8, 9, 15, 16, 17]))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=size, max_size=size))
    nulls = draw(st.sampled_from([0.0, 0.3, 1.0]))  # no NULLs (compact where it can), some, all

    def rows(n):
        out = []
        for _ in range(n):
            features = [None if draw(st.floats(0, 1)) < nulls else draw(FEATURE_VALUES[kind]) for kind in kinds]
            out.append((draw(times), features))
        return out

    n = draw(st.integers(1, 4))
    return kinds, rows(n), rows(n)


def encoded(layout: Layout, rows) -> list[bytes]:
    """Each row's value, column-wise (the batch path) and row by row (the row path): the same bytes."""
    micros = [m for m, _ in rows]
    features = [[f[i] for _, f in rows] for i in range(len(layout.features))]
    table = {"user_id": [str(i) for i in range(len(rows))], "event_timestamp": _timestamps(micros)}
    for (name, kind), column in zip(layout.features, features, strict=True):
        table[name] = _timestamps(column) if kind == "timestamp" else pa.array(column, _ARROW[kind])
    batch = [v.as_py() for v in layout.encode_values(pa.table(table))]
    assert batch == layout.encode_rows(micros, features)
    return batch


_ARROW = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "text": pa.string()}


def _timestamps(micros: list[int | None]) -> pa.Array:
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us"))


def stored_time(value: bytes, layout: Layout) -> float:
    """The event time WRITE_NEWER compares: seconds of the compact form exactly, else the double."""
    if len(value) == layout.compact_length:
        return struct.unpack(">I", value[:4])[0] * 1_000_000
    return struct.unpack(">d", value[:8])[0]


def same(a: list[object], b: list[object]) -> bool:
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@pytest.fixture
def client(private_redis):  # noqa: F811
    url, _, _ = private_redis
    return redis.Redis.from_url(url)


def write(client, layout: Layout, keys: list[bytes], values: list[bytes], path: str) -> tuple[int, int]:
    """Write rows by one of push's ways: the row path's one call (SmallRows), the batch path's
    script calls (pack_writes, 2 rows a call) or SET NX first (the script then takes the keys that existed);
    on a Redis Cluster client, its router (featsync.online.cluster)."""
    pusher = Pusher(None, client, chunk_rows=2)  # type: ignore[arg-type]  # no project needed; 3-4 rows: 2 calls
    if path == "rows":
        (reply,) = pusher._write_script(SmallRows(keys, values, [0] * len(keys), layout.value_shape))
        if isinstance(reply, redis.ResponseError):
            raise refused(reply)
        return reply[0], reply[1]
    rows = Rows(pa.array(keys, pa.binary()), pa.array(values, pa.binary()), np.zeros(len(keys), np.int64), layout.value_shape)
    stats = PushStats("fv_shape", 1)
    pusher._set_nx = path == "set_nx"
    pusher.write(rows, stats)
    return stats.keys_written, stats.skipped_stale


def check_round_trip(client, case, first: str, second: str) -> None:
    kinds, old_rows, new_rows = case
    layout = Layout("t", make_view(kinds))
    keys = [layout.key([str(i)]) for i in range(len(old_rows))]
    client.delete(*keys) if not isinstance(client, redis.RedisCluster) else [client.delete(k) for k in keys]
    old, new = encoded(layout, old_rows), encoded(layout, new_rows)
    assert write(client, layout, keys, old, first) == (len(keys), 0)
    assert [client.get(k) for k in keys] == old
    try:
        written, stale = write(client, layout, keys, new, second)
    except ForeignValueError as exc:  # a false positive
        pytest.fail(f"{exc}: {kinds} {old_rows}")
    wins = [stored_time(o, layout) <= stored_time(n, layout) for o, n in zip(old, new, strict=True)]
    assert (written, stale) == (sum(wins), len(wins) - sum(wins))
    expected = [n if win else o for o, n, win in zip(old, new, wins, strict=True)]
    assert [client.get(k) for k in keys] == expected
    winners = [n if w else o for o, n, w in zip(old_rows, new_rows, wins, strict=True)]
    for value, (micros, features) in zip(expected, winners, strict=True):
        at, decoded = layout.decode_row(value)
        assert at == min(int(float(micros)), MAX_MICROS) or len(value) == layout.compact_length
        want = [None if v is None else (bool(v) if k == "bool" else v) for v, k in zip(features, kinds, strict=True)]
        got = [d if k != "timestamp" or d is None else _micros(d) for d, k in zip(decoded, kinds, strict=True)]
        assert same(got, want)
    # The same rows again through the script: every key is written (equal times win).
    assert write(client, layout, keys, expected, "rows" if first == "rows" else "script") == (len(keys), 0)
    for key in keys:
        client.delete(key)


PATHS = st.sampled_from(["rows", "script", "set_nx"])
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@settings(max_examples=int(os.environ.get("WRITE_SCRIPT_EXAMPLES", "60")), **SETTINGS)
@given(case=cases(), first=PATHS, second=PATHS)
def test_no_value_featsync_writes_is_foreign(client, case, first, second):
    check_round_trip(client, case, first, second)


@settings(max_examples=int(os.environ.get("WRITE_SCRIPT_EXAMPLES", "20")), **SETTINGS)
@given(case=cases(), first=st.sampled_from(["script", "set_nx"]), second=st.sampled_from(["script", "set_nx"]))
def test_no_value_featsync_writes_is_foreign_on_a_cluster(cluster_client, case, first, second):
    check_round_trip(cluster_client, case, first, second)


@pytest.fixture(scope="module")
def cluster_client(cluster):  # noqa: F811
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    yield client
    client.close()


def _micros(moment) -> int:
    from datetime import UTC, datetime

    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // __import__("datetime").timedelta(microseconds=1)
