"""POST /push and /write-to-online-store (Feast's shapes) on the server's app, against real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from starlette.testclient import TestClient

from featsync.online.server import ServeConfig, create_app
from test_cluster import cluster  # noqa: F401 (fixture)
from test_push_rows import cleanup

NOW = datetime.now(UTC).replace(microsecond=0)
H = timedelta(hours=1)
TOKEN = "push-s3cret"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def http(pit_duckdb, redis_url):
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    project = pit_duckdb
    config = ServeConfig(
        str(project.project_dir), str(project.profiles_dir), "duckdb", redis_url, prefix, max_batch=100, auth_token=TOKEN
    )
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        client.headers["authorization"] = f"Bearer {TOKEN}"
        yield client
    cleanup(project, redis.Redis.from_url(redis_url), prefix)


def online(http: TestClient, users: list[str], features: tuple[str, ...] = ("amount", "label")) -> dict:
    body = {"features": [f"fv_user:{f}" for f in features], "entities": {"user_id": users}}
    reply = http.post("/get-online-features", json=body)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    return {f: results[1 + i]["values"] for i, f in enumerate(features)}


def df(users: list[str], at: datetime, amounts: list, labels: list | None = None) -> dict:
    return {
        "user_id": users,
        "event_timestamp": [iso(at)] * len(users),
        "amount": amounts,
        "label": labels if labels is not None else ["api"] * len(users),
    }


def test_push_is_served_at_once_and_older_rows_never_win(http):
    reply = http.post("/push", json={"push_source_name": "fv_user", "df": df(["p1", "p2"], NOW - H, [1, 2]), "to": "online"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "feature_view": "fv_user",
        "rows": 2,
        "written": 2,
        "stale": 0,
        "expired": 0,
        "superseded": 0,
        "offline": None,
    }
    assert online(http, ["p1", "p2"]) == {"amount": [1, 2], "label": ["api", "api"]}
    older = http.post("/push", json={"push_source_name": "fv_user", "df": df(["p1"], NOW - 2 * H, [9])})
    assert older.json()["stale"] == 1
    newer = http.post(
        "/write-to-online-store",
        json={"feature_view_name": "fv_user", "df": df(["p2"], NOW - H / 2, [3], ["newer"]), "allow_registry_cache": True},
    )
    assert newer.status_code == 200 and newer.json()["written"] == 1
    assert online(http, ["p1", "p2"]) == {"amount": [1, 3], "label": ["api", "newer"]}


def test_push_moves_the_view_s_newest_event_time_and_freshness(http):
    """As the batch push does: the push state's newest_event_time (compared and set in Redis,
    never lowered), which /metrics' freshness gauge and the UI read."""
    for at in (NOW - H, NOW - 2 * H):  # the older one after: it stays at NOW - 1h
        reply = http.post("/push", json={"push_source_name": "fv_user", "df": df(["f1"], at, [1])})
        assert reply.status_code == 200, reply.text
    metrics = http.get("/metrics").text
    name = 'featsync_feature_view_freshness_seconds{feature_view="fv_user"}'
    age = float(next(line for line in metrics.splitlines() if line.startswith(name)).split()[-1])
    assert H.total_seconds() <= age < 2 * H.total_seconds()  # from NOW - 1h, not lowered to NOW - 2h


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"push_source_name": "fv_user", "df": df(["ok", None], NOW, [1, 2])}, 422, "row 1, column 'user_id': NULL"),
        ({"push_source_name": "fv_user", "df": df(["ok", "x"], NOW, [1, "two"])}, 422, "row 1, column 'amount': 'two'"),
        ({"push_source_name": "fv_user", "df": {**df(["ok"], NOW, [1]), "extra": [1]}}, 422, "unknown column 'extra'"),
        ({"push_source_name": "fv_user", "df": {"user_id": ["ok"], "event_timestamp": [iso(NOW)]}}, 422, "'amount' is missing"),
        (
            {"push_source_name": "fv_user", "df": {**df(["ok", "x"], NOW, [1, 2]), "event_timestamp": [iso(NOW), "2024-01-01"]}},
            422,
            "row 1, column 'event_timestamp'",
        ),
        ({"push_source_name": "nope", "df": df(["ok"], NOW, [1])}, 404, "no feature view named 'nope'"),
        ({"push_source_name": "fv_user", "df": df(["ok"], NOW, [1]), "to": "moon"}, 422, "'to' must be one of"),
        ({"push_source_name": "fv_user", "df": [1, 2]}, 400, "'df' must be an object of columns"),
        ({"push_source_name": "fv_user", "df": df(["ok"], NOW, [1]), "colour": 1}, 400, "unknown request field(s): colour"),
        ({"push_source_name": "fv_user", "df": df([f"u{i}" for i in range(101)], NOW, [1] * 101)}, 413, "maximum batch is 100"),
    ],
)
def test_bad_requests_name_the_problem_and_write_nothing(http, body, status, message):
    reply = http.post("/push", json=body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["detail"]
    assert online(http, ["ok"]) == {"amount": [None], "label": [None]}


def test_the_write_endpoints_need_the_token(http):
    body = {"push_source_name": "fv_user", "df": df(["t1"], NOW - H, [1])}
    for path, payload in (("/push", body), ("/write-to-online-store", {"feature_view_name": "fv_user", "df": body["df"]})):
        for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"}):
            reply = http.post(path, json=payload, headers=headers)
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert online(http, ["t1"])["amount"] == [None]
    read = {"features": ["fv_user:amount"], "entities": {"user_id": ["t1"]}}
    assert http.post("/get-online-features", json=read, headers={"authorization": ""}).status_code == 200  # reads stay open


def test_push_counts_in_metrics(http):
    http.post("/push", json={"push_source_name": "fv_user", "df": df(["m1"], NOW - H, [1])})
    metrics = http.get("/metrics").text
    assert 'featsync_requests_total{code="200",endpoint="/push"}' in metrics


def test_push_to_a_redis_cluster(pit_duckdb, cluster):  # noqa: F811
    """redis+cluster:// URLs: one WRITE_NEWER call per hash slot, newest wins as on one node."""
    project = pit_duckdb
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "duckdb", cluster.url, prefix)
    users = [f"c{i}" for i in range(50)]
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        reply = http.post("/push", json={"push_source_name": "fv_user", "df": df(users, NOW - H, list(range(50)))})
        assert reply.status_code == 200 and reply.json()["written"] == 50, reply.text
        older = http.post("/push", json={"push_source_name": "fv_user", "df": df(users, NOW - 2 * H, [0] * 50)})
        assert older.json()["stale"] == 50
        assert online(http, users)["amount"] == list(range(50))


def test_a_foreign_value_on_a_redis_cluster_is_a_409_naming_the_key(pit_duckdb, cluster):  # noqa: F811
    """The cluster's per-slot script calls go through a redis-py pipeline, which puts its own
    words before the script's error: still a 409 naming the key."""
    project = pit_duckdb
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "duckdb", cluster.url, prefix)
    client = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster://", "redis://"))
    from featsync.online.push import Pusher

    bad = Pusher(project, client, key_prefix=prefix).layout(project.registry().feature_view("fv_user")).key(["c7"])
    client.set(bad, b"hello")
    users = [f"c{i}" for i in range(10)]
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        reply = http.post("/push", json={"push_source_name": "fv_user", "df": df(users, NOW - H, list(range(10)))})
        assert reply.status_code == 409, reply.text
        assert f"Redis key {bad.decode()!r} (5 bytes) is not a featsync value" in reply.json()["detail"]
    assert client.get(bad) == b"hello"
    client.delete(bad)


def test_push_offline_lands_in_the_log_before_the_answer(http, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    both = http.post("/push", json={"push_source_name": "fv_user", "df": df(["o1"], NOW - H, [5]), "to": "online_and_offline"})
    assert both.status_code == 200, both.text
    logged = pq.read_table(both.json()["offline"]).to_pylist()
    assert [(r["user_id"], r["amount"], r["label"]) for r in logged] == [("o1", 5, "api")]
    only = http.post("/push", json={"push_source_name": "fv_user", "df": df(["o2"], NOW - H, [6]), "to": "offline"})
    assert only.json()["written"] == 0 and only.json()["offline"].endswith(".parquet")
    assert online(http, ["o1", "o2"])["amount"] == [5, None]
    assert len(list((tmp_path / "pushed" / "fv_user").glob("*.parquet"))) == 2


@pytest.mark.parametrize("to", ["online", "offline", "online_and_offline"])
def test_refused_instants_and_nul_are_422_and_write_nothing_anywhere(http, tmp_path, monkeypatch, to):
    """An event or created time outside the years 1 to 9999 once in UTC, and a NUL in text or
    in a key, are 422 naming the row and column, on the row path (one row) and the batch path
    (65 rows), for every destination, and nothing of the request is written: not online, and
    not in the offline log (which used to be written before the time check)."""
    monkeypatch.setenv("FEATSYNC_PUSH_LOG_DIR", str(tmp_path / "pushed"))
    bad = [
        ("event_timestamp", "0001-01-01T00:00:00+01:00", "0000-12-31 23:00:00.000000Z is outside the years 1 to 9999 in UTC"),
        ("event_timestamp", "9999-12-31T23:59:59-01:00", "10000-01-01 00:59:59.000000Z is outside the years 1 to 9999 in UTC"),
        ("created_timestamp", "0001-01-01T00:30:00+01:00", "0000-12-31 23:30:00.000000Z is outside the years 1 to 9999"),
        ("label", "a\x00b", "'a\\x00b' holds a NUL character (\\x00)"),
        ("user_id", "k\x00", "'k\\x00' holds a NUL character (\\x00)"),
    ]
    for rows in (1, 65):
        for column, value, message in bad:
            body = df(["ok"] + [f"u{i}" for i in range(rows - 1)], NOW - H, list(range(rows)))
            body["created_timestamp"] = [iso(NOW - H)] * rows
            body[column] = body[column][: rows - 1] + [value]
            reply = http.post("/push", json={"push_source_name": "fv_user", "df": body, "to": to})
            assert reply.status_code == 422, (rows, column, reply.text)
            assert f"row {rows - 1}, column '{column}': {message}" in reply.json()["detail"], reply.text
    assert not (tmp_path / "pushed").exists()
    assert online(http, ["ok", "u0"]) == {"amount": [None, None], "label": [None, None]}


@pytest.mark.parametrize(
    ("column", "value", "quoted"),
    [
        ("amount", "9" * 100_000, "'" + "9" * 100 + "…(100000 characters) is not an integer"),
        ("user_id", 7.5, None),  # (a short value: quoted whole)
        ("label", ["x" * 50] * 1000, "…(54000 characters) is not a string"),
    ],
)
def test_a_refused_value_is_quoted_short(http, column, value, quoted):
    """A 900 kB value in the wrong column came back in full, twice (the error body's `detail`
    and Feast's `message`): 1.8 MB of answer. Quoted values are cut at 100 characters."""
    rows = df(["q1"], NOW - H, [1])
    rows[column] = [value]
    reply = http.post("/push", json={"push_source_name": "fv_user", "df": rows})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert reply.json()["message"] == detail and len(reply.content) < 1000
    assert f"row 0, column '{column}': " in detail
    if quoted is not None:
        assert quoted in detail
    else:
        assert "7.5 is not" in detail


def test_a_refused_entity_value_of_a_read_is_quoted_short(http):
    reply = http.post("/get-online-features", json={"features": ["fv_user:amount"], "entities": {"user_id": [["u"] * 50_000]}})
    assert reply.status_code == 400 and len(reply.content) < 1000, reply.text[:200]
    assert reply.json()["detail"].endswith("…(250000 characters) is a list; entity keys are strings or integers")


def test_a_refused_row_is_described_with_short_values(http):
    """A time outside the years 1..9999 of a row with a 100,000-character key: a short 422
    naming the row and column (the key is not repeated)."""
    rows = {**df(["k" * 100_000], NOW, [1]), "event_timestamp": ["0001-01-01T00:00:00+01:00"]}
    reply = http.post("/push", json={"push_source_name": "fv_user", "df": rows})
    assert reply.status_code == 422 and len(reply.content) < 1000, reply.text[:300]
    assert "row 0, column 'event_timestamp': " in reply.json()["detail"]


@pytest.mark.parametrize("n", [3, 70], ids=["row path", "batch path"])
def test_the_counts_add_up_to_the_rows_given(http, n):
    """written + stale + expired + superseded = rows: a row that another row of the same key in
    the request beats is counted `superseded` (the counts used to leave it out)."""
    tag = uuid.uuid4().hex[:6]
    http.post("/push", json={"push_source_name": "fv_user", "df": df([f"s-{tag}"], NOW - H / 2, [0])})  # stored: newer
    users = [f"s-{tag}", f"d-{tag}", f"d-{tag}", f"e-{tag}", *(f"x{i}-{tag}" for i in range(n - 4))][:n]
    times = [NOW - H, NOW - H, NOW - H / 3, NOW - 4 * H, *[NOW - H] * (n - 4)][:n]  # e: past its 3h ttl
    body = {"user_id": users, "event_timestamp": [iso(t) for t in times], "amount": [1] * n, "label": ["x"] * n}
    reply = http.post("/push", json={"push_source_name": "fv_user", "df": body})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    counts = {k: answer[k] for k in ("written", "stale", "expired", "superseded")}
    stale = 1  # s: older than the stored row
    expected = {"written": n - 3 if n > 3 else 1, "stale": stale, "expired": 1 if n > 3 else 0, "superseded": 1}
    assert counts == expected and sum(counts.values()) == answer["rows"] == n


@pytest.mark.parametrize(
    ("sep", "suffix", "hours", "micros"),
    [
        ("T", ".123456789Z", 0, 123456),  # Java's Instant.toString() of a nanosecond instant
        ("T", ".1234567Z", 0, 123456),  # .NET's "o" (a UTC DateTime)
        ("T", ".1234567+01:00", 1, 123456),  # .NET's "o" (a DateTimeOffset)
        (" ", ".123456789+00:00", 0, 123456),  # pandas' str() of a nanosecond Timestamp
        ("T", ".999999999-02:30", -2.5, 999999),  # cut, never rounded up into the next second
        ("t", ".5z", 0, 500000),  # RFC 3339 allows a lower-case t and z
        ("T", ".123456000Z", 0, 123456),
    ],
)
def test_rfc3339_times_of_any_precision_and_case_are_taken(http, sep, suffix, hours, micros):
    """On the row path (1 row) and the batch path (70 rows) alike, digits beyond the sixth cut
    (the instant floored to its microsecond, as the batch push floors nanosecond warehouse
    times); they used to be refused as having no zone."""
    base = (datetime.now(UTC) - H).replace(microsecond=0)
    text = (base + timedelta(hours=hours)).strftime(f"%Y-%m-%d{sep}%H:%M:%S") + suffix
    user = f"ns-{uuid.uuid4().hex[:6]}"
    for n in (1, 70):
        users = [user, *(f"pad{i}-{user}" for i in range(n - 1))]
        body = {"user_id": users, "event_timestamp": [text] * n, "amount": [n] * n, "label": ["x"] * n}
        reply = http.post("/push", json={"push_source_name": "fv_user", "df": body})
        assert reply.status_code == 200 and reply.json()["written"] == n, reply.text
    read = http.post("/get-online-features", json={"features": ["fv_user:amount"], "entities": {"user_id": [user]}})
    result = read.json()["results"][1]
    assert result["values"] == [70]  # the second write, at an equal event time, replaced the first
    served = datetime.fromisoformat(result["event_timestamps"][0].replace("Z", "+00:00"))
    assert served == base + timedelta(microseconds=micros)


def test_a_leap_second_is_refused_saying_so(http):
    for n in (1, 70):
        body = {"user_id": [f"l{i}" for i in range(n)], "event_timestamp": ["2016-12-31T23:59:60Z"] * n}
        body |= {"amount": [1] * n, "label": ["x"] * n}
        reply = http.post("/push", json={"push_source_name": "fv_user", "df": body})
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"] == (
            "feature view 'fv_user': row 0, column 'event_timestamp': '2016-12-31T23:59:60Z' is a leap second (:60), "
            "which featsync does not take: its instants are UTC without leap seconds, as in the warehouse; send "
            "23:59:59.999999 or the next second"
        )


def test_keys_are_taken_as_given(http):
    """docs/push-api.md, "Keys": a JSON object's repeated name is its last value (orjson), keys
    are their UTF-8 bytes (NFC and NFD spellings are two entities, as in SQL), and the empty
    string is a key like any other (as from the warehouse: it is not NULL)."""
    users = ["", "caf\u00e9", "cafe\u0301"]
    body = json.dumps(df(users, NOW - H, [1, 2, 3]))
    text = '{"push_source_name": "fv_user", "df": {"amount": [7, 7, 7], ' + body[1:] + "}"
    reply = http.post("/push", content=text.encode(), headers={"content-type": "application/json"})  # "amount" twice
    assert reply.status_code == 200 and reply.json()["written"] == 3, reply.text
    assert online(http, users)["amount"] == [1, 2, 3]


def test_a_state_key_of_another_type(pit_duckdb, redis_url):
    """The view's state key holds a string (WRONGTYPE). Before a server has checked the view's
    owner, the write is refused: 409 naming the key, nothing written. Once it has (the rows are
    written before the state is touched), the rows are online, so the answer is 200 with their
    counts; the broken state is logged and counted in featsync_errors_total{kind="state_hash"}
    (it used to be a 503 'Redis refused the write', which clients retry for ever)."""
    from featsync.online.push import Pusher

    project = pit_duckdb
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-pushapi-{uuid.uuid4().hex[:8]}"
    key = Pusher(project, client, key_prefix=prefix).layout(project.registry().feature_view("fv_user")).state_key
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "duckdb", redis_url, prefix)
    try:
        with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
            client.set(key, "not a hash")
            refused = http.post("/push", json={"push_source_name": "fv_user", "df": df(["w1"], NOW - H, [1])})
            assert refused.status_code == 409, refused.text
            assert f"(key {key}) is not a hash" in refused.json()["detail"]
            assert online(http, ["w1"])["amount"] == [None]
            client.delete(key)
            assert http.post("/push", json={"push_source_name": "fv_user", "df": df(["w1"], NOW - H, [1])}).status_code == 200
            client.delete(key)
            client.set(key, "not a hash")
            reply = http.post("/push", json={"push_source_name": "fv_user", "df": df(["w2"], NOW - H, [2])})
            assert reply.status_code == 200 and reply.json()["written"] == 1, reply.text
            assert online(http, ["w2"])["amount"] == [2]
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert 'featsync_errors_total{endpoint="/push",kind="state_hash"} 1.0' in metrics.text
    finally:
        cleanup(project, client, prefix)
        client.delete(key)
