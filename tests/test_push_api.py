"""POST /push and /write-to-online-store (Feast's shapes) on the server's app, against real Redis."""

from __future__ import annotations

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
    assert reply.json() == {"feature_view": "fv_user", "rows": 2, "written": 2, "stale": 0, "expired": 0, "offline": None}
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
