"""Reading pushed features back: values, statuses, TTL re-checked at read time, shapes."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from click.testing import CliRunner

from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.online.serving import OnlineReader
from test_push import NOW, PAIRS, PROFILES, USERS, H, load, project, pusher  # noqa: F401 (fixtures)


@pytest.fixture
def reader(pusher):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    pusher.push()
    return OnlineReader(pusher.project.registry(), pusher.client, pusher.key_prefix)


def test_values_and_statuses(reader):
    rows = [{"user_id": "u1", "shop": "x", "merchant_id": "m|2"}, {"user_id": "nobody", "merchant_id": "m1"}]
    response = reader.get(rows, features=["fv_user:amount", "fv_user:label", "fv_pair:score", "fv_profile:tier"])
    assert response.to_dict() == {
        "user_id": ["u1", "nobody"],
        "merchant_id": ["m|2", "m1"],
        "amount": [2, None],
        "label": ["y", None],
        "score": [1.25, None],
        "tier": ["gold", None],
    }
    assert response.statuses["amount"] == ["present", "not_found"]
    assert response.event_timestamps["fv_user"] == [(NOW - H).replace(tzinfo=UTC), None]
    assert isinstance(response.features["amount"][0], int) and isinstance(response.features["score"][0], float)
    assert response.to_arrow().num_rows == 2 and list(response.to_pandas().columns)[:2] == ["user_id", "merchant_id"]


def test_ttl_is_checked_again_at_read_time(reader):
    later = OnlineReader(reader.registry, reader.client, reader.key_prefix, now=lambda: time.time() + 2.5 * 3600)
    response = later.get([{"user_id": "u1"}], features=["fv_user:amount", "fv_profile:tier"])
    # u1's row is from NOW - 1h with a 3h ttl: at NOW + 2.5h it has expired even though the
    # key may still exist; the profile (5h ttl, valid until NOW + 1h) is read from its key.
    assert response.statuses["amount"] == ["expired"] and response.features["amount"] == [None]


def test_ttl_bound_is_inclusive_as_in_the_join(reader):
    """Offline a row matches while spine ts <= event + ttl; online it reads the same."""
    bound = (NOW - H + 3 * H).replace(tzinfo=UTC).timestamp()  # u1: event NOW - 1h, ttl 3h
    at_bound = OnlineReader(reader.registry, reader.client, reader.key_prefix, now=lambda: bound)
    assert at_bound.get([{"user_id": "u1"}], features=["fv_user:amount"]).statuses["amount"] == ["present"]
    past = OnlineReader(reader.registry, reader.client, reader.key_prefix, now=lambda: bound + 1e-5)
    assert past.get([{"user_id": "u1"}], features=["fv_user:amount"]).statuses["amount"] == ["expired"]


def test_full_feature_names_and_bad_requests(reader):
    response = reader.get([{"user_id": "u1"}], features=["fv_user:*"], full_feature_names=True)
    assert set(response.features) == {"fv_user__amount", "fv_user__label"}
    with pytest.raises(FeatsyncError, match="entity row 0 lacks merchant_id, needed by feature view 'fv_pair'"):
        reader.get([{"user_id": "u1"}], features=["fv_pair:score"])
    with pytest.raises(FeatsyncError, match="feature view 'fv_user' has no feature 'nope'"):
        reader.get([{"user_id": "u1"}], features=["fv_user:nope"])
    with pytest.raises(FeatsyncError, match="'fv_user_copy' is not online"):
        reader.get([{"user_id": "u1"}], features=["fv_user_copy:amount"])


def test_cli_get(reader, pusher, redis_url):  # noqa: F811
    args = ["get", "--project-dir", str(pusher.project.project_dir), "--target", "duckdb", "--redis-url", redis_url]
    args += ["--key-prefix", pusher.key_prefix, "--features", "fv_user:amount", "--features", "fv_user:label"]
    result = CliRunner().invoke(main, [*args, "--entity", "user_id=a|b\\c", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "user_id": ["a|b\\c"],
        "amount": [5],
        "label": [None],
        "amount__status": ["present"],
        "label__status": ["present"],
    }


def test_batch_decoding_matches_row_decoding(project):  # noqa: F811
    """Many values of a fixed-width view are decoded as one numpy array: the same values as row by row."""
    from dataclasses import replace
    from datetime import datetime

    import pyarrow as pa
    import pyarrow.compute as pc

    from featsync.online.layout import Layout
    from featsync.registry import Column

    view = project.registry().feature_view("fv_pair")
    kinds = {"a": "bigint", "b": "float8", "c": "timestamp", "d": "boolean", "e": "integer", "f": "double", "g": "bigint"}
    columns = [Column("user_id", "text"), Column("merchant_id", "text"), Column("event_timestamp", "timestamp")]
    layout = Layout("t", replace(view, columns=(*columns, *(Column(k, v) for k, v in kinds.items()))))
    n = 40
    table = pa.table(
        {
            "user_id": [str(i) for i in range(n)],
            "merchant_id": ["m"] * n,
            "event_timestamp": pa.array([datetime(2024, 1, 1, 0, 0, i % 60, i * 1001) for i in range(n)], pa.timestamp("us")),
            "a": [None if i % 3 == 0 else i - 20 for i in range(n)],
            "b": [None if i % 4 == 0 else i / 3 for i in range(n)],
            "c": pa.array([None if i % 5 == 0 else datetime(2023, 5, 1, 0, 0, i) for i in range(n)], pa.timestamp("us")),
            "d": [None if i % 7 == 0 else i % 2 == 0 for i in range(n)],
            "e": [2**40 + i for i in range(n)],
            "f": [float(-i) for i in range(n)],
            "g": [None if i == 5 else 2**62 for i in range(n)],
        }
    )

    def typed(rows):  # False == 0 in Python: compare the types too
        return [[(type(v), v) for v in row] for row in rows]

    # Every row in the full form (NULLs, sub-second times), then a mix: rows without NULLs at a
    # whole second are stored in the compact form (decoded as their own block, put back in place).
    compact_rows = pc.equal(pc.bit_wise_and(pa.array(range(n)), 1), 0)
    whole_seconds = pa.array([datetime(2024, 1, 1, 0, 0, i % 60) for i in range(n)], pa.timestamp("us"))
    mixed = table.set_column(2, "event_timestamp", pc.if_else(compact_rows, whole_seconds, table.column("event_timestamp")))
    for name in "abcdg":
        mixed = mixed.set_column(
            mixed.schema.get_field_index(name),
            name,
            pc.if_else(compact_rows, pc.fill_null(mixed.column(name), mixed.column(name).drop_null()[0]), mixed.column(name)),
        )
    for data, compact_count in ((table, 0), (mixed, n // 2)):
        values = [v.as_py() for v in layout.encode_values(data)]
        assert sum(len(v) == layout.compact_length for v in values) == compact_count
        micros, by_column = layout.decode_columns(values)
        rows = [layout.decode_row(v) for v in values]
        assert micros == [event for event, _ in rows]
        assert micros == pc.cast(pc.cast(data.column("event_timestamp"), pa.int64()), pa.int64()).to_pylist()
        assert typed(zip(*by_column, strict=True)) == typed(decoded for _, decoded in rows)
    rows = [layout.decode_row(v.as_py()) for v in layout.encode_values(table)]
    assert rows[1][1][:4] == [-19, 1 / 3, datetime(2023, 5, 1, 0, 0, 1, tzinfo=UTC), False] and rows[0][1][0] is None
    assert type(rows[1][1][3]) is bool and layout.fixed_width


def test_many_entities_read_in_one_batch(reader):
    """Past VECTOR_MIN stored values the view is decoded as one array; statuses and Nones stay in place."""
    from featsync.online.serving import VECTOR_MIN

    pairs = [("u1", "m|2"), ("u1", "m1")] * VECTOR_MIN + [("x", "y")]
    response = reader.get([{"user_id": u, "merchant_id": m} for u, m in pairs], features=["fv_pair:score"])
    assert response.features["score"] == [1.25, 0.5] * VECTOR_MIN + [None]
    assert response.statuses["score"] == ["present"] * 2 * VECTOR_MIN + ["not_found"]
