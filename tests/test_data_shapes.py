"""The fuzz test over data shapes: push, get and the training join agree on the same rows.

Hypothesis draws small tables for the shapes_<precision> views of tests/types_project
(composite keys of text and bigint; float, bigint, text, boolean and timestamp features):
event times at second, millisecond or microsecond precision (before 1970 too, and whole
seconds at the years 1 and 9999), NaN, +-inf, -0.0 and the largest doubles, int64
extremes, empty and unicode text, keys with the layout's separators ('|', '\\', ':'),
NULLs and ties. Each table is pushed to the real Redis (a key prefix of its own), read
back with get, and joined by the training-set path at each entity's latest event time
(the bound is inclusive) and for an entity that has no rows: values (bit for bit: -0.0
and NaN), types, NULLs and statuses must agree, and the online event time must be the
latest row's.

Examples: FEATSYNC_FUZZ_EXAMPLES (default 12, derandomized under CI); run more locally, e.g.
FEATSYNC_FUZZ_EXAMPLES=200 pytest tests/test_data_shapes.py.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from datetime import UTC, datetime, timedelta
from enum import Enum

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import delete_pushed_keys, types_duckdb_execute
from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.offline.training import TrainingSetRequest, get_historical_features
from featsync.online.layout import online_values
from featsync.online.push import Pusher
from featsync.online.serving import NOT_FOUND, PRESENT, OnlineReader
from featsync.store import FeatureStore

EXAMPLES = int(os.environ.get("FEATSYNC_FUZZ_EXAMPLES", "12"))
STEP = {"s": 1_000_000, "ms": 1_000, "us": 1}  # microseconds per unit
EPOCH = datetime(1970, 1, 1)
FEATURES = ("f_float", "f_int", "f_text", "f_bool", "f_ts")

key_texts = st.sampled_from(["", "a", "é", "a|b", "a\\b", "\\|", "x:y", "日本", " ", "|"])
key_ints = st.sampled_from([0, -1, 7, 2**63 - 1, -(2**63)])
floats = st.sampled_from([None, 0.0, -0.0, 1.5, -2.25, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 5e-324])
ints = st.sampled_from([None, 0, -1, 2**63 - 1, -(2**63), 42])
texts = st.sampled_from([None, "", "é", "a|b", "\\", "日本語", "nan", "x" * 70])
bools = st.sampled_from([None, True, False])
feature_times = st.sampled_from(
    [None, datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(1969, 12, 31, 23, 59, 59, 999999)]
)
# Event times: microseconds around 2024 and 1970, floored to the view's precision; and whole
# seconds at the ends of the range (an event time is exact online to the microsecond between
# the years 1685 and 2255, to the second everywhere: featsync.online.layout).
near = st.integers(-3_000_000, 3_000_000).flatmap(
    lambda us: st.sampled_from([datetime(2024, 1, 1) + timedelta(microseconds=us), EPOCH + timedelta(microseconds=us)])
)
extreme = st.sampled_from([datetime(1, 1, 1, 0, 0, 1), datetime(9999, 12, 31, 23, 59, 58)])
event_times = st.one_of(near, near, near, extreme)
rows = st.lists(st.tuples(key_texts, key_ints, event_times, floats, ints, texts, bools, feature_times), min_size=1, max_size=8)


def floor(at: datetime, precision: str) -> datetime:
    us = (at - EPOCH) // timedelta(microseconds=1)
    return EPOCH + timedelta(microseconds=us - us % STEP[precision])


def same(a, b) -> bool:
    """Equal values of equal types; floats bit for bit (so -0.0 is not 0.0, and NaN is NaN)."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def client(redis_url):
    return redis.Redis.from_url(redis_url)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(precision=st.sampled_from(list(STEP)), table=rows)
def test_push_get_and_training_join_agree(types_duckdb, client, precision, table):
    table = [(k, i, floor(at, precision), *rest) for k, i, at, *rest in table]
    view = f"shapes_{precision}"
    types_duckdb_execute(f"delete from shape_rows_{precision}")
    types_duckdb_execute(
        f"insert into shape_rows_{precision} select * from (values {', '.join(['(?, ?, ?, ?, ?, ?, ?, ?)'] * len(table))})",
        [v for row in table for v in row],
    )
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    try:
        (stats,) = Pusher(types_duckdb, client, key_prefix=prefix).push([view], full_refresh=True)
        entities = sorted({(k, i) for k, i, *_ in table})
        assert stats.keys_written == len(entities)
        rows_asked = [{"k_text": k, "k_int": i} for k, i in entities] + [{"k_text": "nobody", "k_int": 0}]
        online = OnlineReader(types_duckdb.registry(), client, prefix).get(rows_asked, [f"{view}:*"])
    finally:
        delete_pushed_keys(types_duckdb, client, prefix)

    latest = {e: max(at for k, i, at, *_ in table if (k, i) == e) for e in entities}
    spine = pa.table(
        {
            "k_text": [r["k_text"] for r in rows_asked],
            "k_int": pa.array([r["k_int"] for r in rows_asked], pa.int64()),
            "ts": pa.array([latest.get((r["k_text"], r["k_int"]), datetime(2024, 1, 1)) for r in rows_asked]).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    joined = get_historical_features(types_duckdb, spine, TrainingSetRequest(features=[f"{view}:*"], spine_timestamp="ts"))
    offline = {}
    for i in range(joined.num_rows):
        row = {name: online_values(joined.column(name))[i] for name in joined.column_names}
        offline[row["k_text"], row["k_int"]] = row

    for n, asked in enumerate(rows_asked):
        entity = (asked["k_text"], asked["k_int"])
        training = offline[entity]
        if entity not in latest:
            assert {online.statuses[f][n] for f in FEATURES} == {NOT_FOUND}
            assert all(training[f] is None for f in FEATURES)
            continue
        assert {online.statuses[f][n] for f in FEATURES} == {PRESENT}, entity
        assert online.event_timestamps[view][n] == latest[entity].replace(tzinfo=UTC)
        for f in FEATURES:
            assert same(online.features[f][n], training[f]), (entity, f, online.features[f][n], training[f])
        # The value is one of the entity's rows at its latest event time (the join's tie-break picks which).
        candidates = [r for r in table if (r[0], r[1]) == entity and r[2] == latest[entity]]
        got = tuple(online.features[f][n] for f in FEATURES)
        expect = [tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) else v for v in r[3:]) for r in candidates]
        assert any(all(same(a, b) for a, b in zip(got, want, strict=True)) for want in expect), (got, expect)


class Key(str, Enum):  # noqa: UP042 (a str Enum, not StrEnum: its str() is "Key.K")
    K = "k"


def test_get_json_is_strict_and_nan_keys_are_refused(types_duckdb, client, redis_url):
    """`featsync get --json` writes NaN and infinities as strings (bare NaN is not JSON); a NaN
    entity key is refused at push with its row and column named, never stored as 'nan'."""
    types_duckdb_execute("delete from shape_rows_us")
    types_duckdb_execute(
        "insert into shape_rows_us values ('k', 1, '2024-01-01', 'nan', 1, 'x' || chr(27) || '[31mred', true, null), "
        "('k', 2, '2024-01-01', '-inf', 1, 'x', true, null)"
    )
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    args = [
        "--project-dir",
        str(types_duckdb.project_dir),
        "--target",
        "duckdb",
        "--redis-url",
        redis_url,
        "--key-prefix",
        prefix,
    ]
    try:
        result = CliRunner().invoke(main, ["push", "--select", "shapes_us", "--skip-validation", *args])
        assert result.exit_code == 0, result.output
        for key, shown in (("1", "NaN"), ("2", "-Infinity")):
            result = CliRunner().invoke(
                main,
                ["get", "--features", "shapes_us:f_float", "--entity", "k_text=k", "--entity", f"k_int={key}", "--json", *args],
            )
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["f_float"] == [shown]
            assert "NaN" not in result.output.replace('"NaN"', "")
        # An integer entity is parsed as one (01 is 1, echoed as a number); not an integer: exit 64.
        get = ["get", "--features", "shapes_us:f_float", "--features", "shapes_us:f_text", "--entity", "k_text=k", *args]
        result = CliRunner().invoke(main, [*get, "--entity", "k_int=01", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["k_int"] == [1] and json.loads(result.stdout)["f_float"] == ["NaN"]
        result = CliRunner().invoke(main, [*get, "--entity", "k_int=1.0"])
        assert result.exit_code == 64 and "entity 'k_int' is an integer; '1.0' is not one" in result.output
        # A pushed text value cannot drive the terminal: control characters are shown escaped.
        result = CliRunner().invoke(main, [*get, "--entity", "k_int=1"])
        assert result.exit_code == 0 and "\x1b" not in result.output and "x\\x1b[31mred" in result.output, result.output

        # The Python API: any integer type, a str Enum by its text, a DataFrame; a float key is refused.
        reader = OnlineReader(types_duckdb.registry(), client, prefix)
        rows = [{"k_text": Key.K, "k_int": np.int64(1)}]
        assert reader.get(rows, ["shapes_us:f_int"]).statuses["f_int"] == ["present"]
        with pytest.raises(FeatsyncError, match="entity key value 1.0 is a float; entity keys are strings or integers"):
            reader.get([{"k_text": "k", "k_int": 1.0}], ["shapes_us:f_int"])
        store = FeatureStore(types_duckdb.project_dir, target="duckdb", redis_url=redis_url, key_prefix=prefix)
        frame = pd.DataFrame({"k_text": ["k", "k"], "k_int": [1, 2]})
        assert store.get_online_features(["shapes_us:f_int"], frame).to_dict()["f_int"] == [1, 1]
        with pytest.raises(TypeError, match=r"entity_rows\[0\] is a str; give a list of dicts"):
            store.get_online_features(["shapes_us:f_int"], ["k"])

        # A view whose key column comes out of the warehouse as a double (no contract): NaN is refused.
        types_duckdb_execute(
            "create or replace view shapes_us as select k_text, case when k_int = 1 then cast('nan' as double) "
            "else cast(k_int as double) end as k_int, * exclude (k_text, k_int) from shape_rows_us"
        )
        result = CliRunner().invoke(main, ["push", "--select", "shapes_us", "--skip-validation", "--full-refresh", *args])
        assert result.exit_code == 1
        assert "feature view 'shapes_us': entity column 'k_int' holds nan in the row (k_text='k', k_int=nan, " in result.output
        assert "entity keys are strings or integers" in result.output and "Traceback" not in result.output
    finally:
        types_duckdb_execute("create or replace view shapes_us as select * from shape_rows_us")
        delete_pushed_keys(types_duckdb, client, prefix)
