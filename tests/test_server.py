"""`featsync serve` as a real process on a free loopback port, called over HTTP, against real Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC

import httpx
import pyarrow as pa
import pytest
import redis

from conftest import delete_pushed_keys
from featsync.online.connections import redis_client
from featsync.online.push import Pusher
from featsync.online.serving import OnlineReader, OnlineStoreUnavailable
from test_cluster import cluster  # noqa: F401 (fixture)
from test_push import NOW, PAIRS, PROFILES, USERS, H, free_port, load, private_redis, project  # noqa: F401 (fixtures)

MAX_BATCH = 50
ROWS = {"user_id": ["u1", "nobody", "é"], "merchant_id": ["m|2", "m1", "m1"]}
FEATURES = ["fv_user:amount", "fv_user:label", "fv_pair:score", "fv_profile:tier"]


def start_server(
    pit_project, redis_url: str | None, key_prefix: str, *extra: str, target: str = "duckdb"
) -> tuple[subprocess.Popen, str]:
    """`featsync serve` in a subprocess; returns once it answers /health (200 or 503)."""
    port = free_port()
    args = [sys.executable, "-m", "featsync", "serve", "--project-dir", str(pit_project.project_dir), "--target", target]
    args += ["--redis-url", redis_url] if redis_url else []
    args += ["--key-prefix", key_prefix, "--port", str(port), "--log-level", "warning", *extra]
    env = {k: v for k, v in os.environ.items() if k != "FEATSYNC_REDIS_URL"}
    return launch(args, env, port, 60)


def launch(args: list[str], env: dict[str, str], port: int, seconds: float) -> tuple[subprocess.Popen, str]:
    """A `featsync serve` / `featsync ui` command line in a subprocess; returns (process, base
    URL) once it answers /health (200 or 503), else fails the test with its output."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    what = f"featsync {args[args.index('-m') + 2]}"
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            httpx.get(f"{base}/health", timeout=2)
            return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{what} did not answer within {seconds:g} s:\n{proc.stdout.read()}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM: a graceful shutdown, which also stops an embedded Redis (slow on a loaded box)."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(project, redis_url):  # noqa: F811
    """The pit project pushed under a key prefix of its own, served by two workers."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    load(USERS, PAIRS, PROFILES)
    pusher = Pusher(project, client, key_prefix=prefix)
    pusher.push()
    # A key that outlived its TTL (clock skew, restored snapshot): stored without expiry.
    layout = pusher.layout(project.registry().feature_view("fv_user"))
    stale = pa.table(
        {
            "user_id": ["stale"],
            "event_timestamp": pa.array([NOW - 4 * H], pa.timestamp("us")),
            "created_timestamp": pa.array([None], pa.timestamp("us")),
            "amount": [7],
            "label": ["s"],
        }
    )
    client.set(layout.key(["stale"]), layout.encode_values(stale)[0].as_py())
    proc, base = start_server(project, redis_url, prefix, "--workers", "2", "--max-batch", str(MAX_BATCH))
    with httpx.Client(base_url=base, timeout=10) as http:
        yield http, OnlineReader(project.registry(), client, prefix)
    stop(proc)
    delete_pushed_keys(project, client, prefix)


def post(http: httpx.Client, body) -> httpx.Response:
    return http.post("/get-online-features", json=body)


def test_metrics_gauges_from_the_push_state_and_no_ui_unless_asked(served):
    """/metrics: freshness and last push per online view, read from Redis at scrape time."""
    http, reader = served
    text = http.get("/metrics").text
    gauges = dict(re.findall(r'^(featsync_feature_view_\w+\{feature_view="\w+"\}) (\S+)$', text, re.M))
    assert {
        f'featsync_feature_view_freshness_seconds{{feature_view="{v}"}}' for v in ("fv_user", "fv_pair", "fv_profile")
    } <= set(gauges)
    age = float(gauges['featsync_feature_view_freshness_seconds{feature_view="fv_pair"}'])
    # fv_pair's newest pushed event is NOW - 24h (NOW: the wall clock when test_push's rows were made)
    assert 24 * 3600 <= age < 24 * 3600 + 3600
    assert time.time() - float(gauges['featsync_feature_view_last_push_timestamp_seconds{feature_view="fv_user"}']) < 3600
    assert not any(k.startswith("featsync_feature_view_freshness_seconds") and "fv_user_copy" in k for k in gauges)  # offline
    assert http.get("/ui/").status_code == 404  # the pages only with --ui (or featsync ui)


def test_feast_shape_values_and_statuses(served):
    http, reader = served
    response = post(http, {"features": FEATURES, "entities": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["feature_names"] == ["user_id", "merchant_id", "amount", "label", "score", "tier"]
    results = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    assert results["user_id"] == {
        "values": ["u1", "nobody", "é"],
        "statuses": ["PRESENT"] * 3,
        "event_timestamps": ["1970-01-01T00:00:00Z"] * 3,
    }
    assert results["amount"]["values"] == [2, None, None]
    assert results["amount"]["statuses"] == ["PRESENT", "NOT_FOUND", "NULL_VALUE"]  # é is stored with a NULL amount
    assert results["label"]["values"] == ["y", None, "z"]
    assert results["score"] == {
        "values": [1.25, None, None],
        "statuses": ["PRESENT", "NOT_FOUND", "NOT_FOUND"],
        "event_timestamps": [(NOW - 24 * H).isoformat() + "Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"],
    }
    assert results["tier"]["values"] == ["gold", None, None]
    # The server and the Python API read through the same plan: the same values.
    rows = [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]
    expected = reader.get(rows, features=FEATURES).to_dict()
    assert {name: result["values"] for name, result in results.items()} == expected


def test_expired_full_feature_names_and_empty_batch(served):
    http, _ = served
    body = post(http, {"features": ["fv_user:*"], "entities": {"user_id": ["stale", "u1"]}, "full_feature_names": True}).json()
    assert body["metadata"]["feature_names"] == ["user_id", "fv_user__amount", "fv_user__label"]
    assert body["results"][1]["values"] == [None, 2] and body["results"][1]["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT"]
    empty = post(http, {"features": ["fv_user:amount"], "entities": {"user_id": []}}).json()
    assert empty["results"] == [{"values": [], "statuses": [], "event_timestamps": []}] * 2
    integers = post(http, {"features": ["fv_user:amount"], "entities": {"user_id": [42]}}).json()
    assert integers["results"][1]["statuses"] == ["NOT_FOUND"]  # integer keys are accepted


@pytest.mark.parametrize("rows", [1, 3, 20])  # one row's own path, the general one, numpy's decoding (16+)
def test_nan_and_infinities_are_feasts_strings_not_null(served, rows):
    """A float feature's NaN, inf and -inf: "NaN", "Infinity", "-Infinity" with status PRESENT,
    as Feast's server writes them (orjson wrote null, which reads as a missing value), and as
    `featsync get --json` prints them; a stored NULL beside them stays null / NULL_VALUE."""
    http, reader = served
    layout = reader.plan(["fv_pair:score"], None, False).views[0].layout
    micros = int(NOW.replace(tzinfo=UTC).timestamp()) * 1_000_000 - 3_600_000_000
    scores = [float("nan"), float("inf"), float("-inf"), 2.5, None]
    merchants = [f"nf{i}" for i in range(rows)]
    stored = [scores[i % len(scores)] for i in range(rows)]
    for merchant, value in zip(merchants, layout.encode_rows([micros] * rows, [stored]), strict=True):
        reader.client.set(layout.key(["u-nonfinite", merchant]), value)
    entities = {"user_id": ["u-nonfinite"] * rows + ["nobody"], "merchant_id": [*merchants, "m1"]}
    for names in (False, True):
        response = post(http, {"features": ["fv_pair:score"], "entities": entities, "full_feature_names": names})
        assert response.status_code == 200, response.text
        score = response.json()["results"][2]
        shown = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
        assert score["values"] == [shown.get(str(v), v) for v in stored] + [None]
        assert score["statuses"] == [("NULL_VALUE" if v is None else "PRESENT") for v in stored] + ["NOT_FOUND"]
    one = post(http, {"features": ["fv_pair:score"], "entities": {"user_id": ["u-nonfinite"], "merchant_id": ["nf0"]}})
    assert one.json()["results"][2]["values"] == ["NaN"]
    # The Python API keeps the floats themselves.
    got = reader.get([{"user_id": "u-nonfinite", "merchant_id": m} for m in merchants], ["fv_pair:score"]).to_dict()["score"]
    assert [str(v) for v in got] == [str(v) for v in stored]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "request body is not valid JSON"),
        ([1, 2], 400, "request body must be a JSON object"),
        ({"features": ["fv_user:nope"], "entities": {"user_id": ["u1"]}}, 404, "feature view 'fv_user' has no feature 'nope'"),
        ({"features": ["nope:amount"], "entities": {"user_id": ["u1"]}}, 404, "nope"),
        ({"feature_service": "nope", "entities": {"user_id": ["u1"]}}, 404, "nope"),
        ({"features": "fv_user:amount", "entities": {"user_id": ["u1"]}}, 400, "'features' must be a list"),
        ({"entities": {"user_id": ["u1"]}}, 400, "give 'features' or 'feature_service'"),
        ({"features": ["fv_pair:score"], "entities": {"user_id": ["u1"]}}, 400, "missing entity key 'merchant_id'"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": [1.5]}}, 400, "1.5 is a number; entity keys are strings"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": [True]}}, 400, "True is a boolean"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": [None]}}, 400, "entity row 0 lacks user_id"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": "u1"}}, 400, "entity 'user_id' must be a list"),
        ({"features": ["fv_user:amount"], "entities": ["u1"]}, 400, "'entities' must be an object"),
        (
            {"features": ["fv_pair:score"], "entities": {"user_id": ["u1", "u2"], "merchant_id": ["m1"]}},
            400,
            "entity columns have different lengths (user_id: 2, merchant_id: 1)",
        ),
        (
            {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"], "shop": ["x"]}},
            400,
            "'shop' is not an entity of the requested feature views",
        ),
        ({"features": ["fv_user:amount"], "entities": {"user_id": ["u"] * (MAX_BATCH + 1)}}, 413, "maximum batch is 50"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}, "request_data": [1]}, 400, "'request_data' must be"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}, "full_feature_names": "yes"}, 400, "true or false"),
        (
            {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}, "request_data": {"amount": [5]}},
            400,
            "no on-demand features requested",
        ),
        ({"features": ["fv_user_copy:amount"], "entities": {"user_id": ["u1"]}}, 400, "'fv_user_copy' is not online"),
    ],
)
def test_malformed_requests_get_a_4xx_naming_the_problem(served, body, status, message):
    http, _ = served
    if isinstance(body, bytes):
        response = http.post("/get-online-features", content=body)
    else:
        response = post(http, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert message in error["detail"]
    # Feast's error shape too (feast/errors.py FeastError.to_error_detail), the same message
    assert error["module"] == "feast.errors" and error["message"] == error["detail"] and error["class"]


@pytest.mark.parametrize(
    ("body", "feast_class"),
    [
        ({"features": ["nope:amount"], "entities": {"user_id": ["u1"]}}, "FeatureViewNotFoundException"),
        ({"feature_service": "nope", "entities": {"user_id": ["u1"]}}, "FeatureServiceNotFoundException"),
        ({"features": ["fv_user:nope"], "entities": {"user_id": ["u1"]}}, "FeastObjectNotFoundException"),
        ({"features": "fv_user:amount", "entities": {"user_id": ["u1"]}}, "InvalidFeaturesParameterType"),
        ({"features": ["fv_pair:score"], "entities": {"user_id": ["u1"]}}, "FeastEntityDFMissingColumnsError"),
        ({"features": ["fv_user:amount"], "entities": {"user_id": [1.5]}}, "FeastError"),
    ],
)
def test_error_bodies_name_the_feast_exception_class(served, body, feast_class):
    http, _ = served
    assert post(http, body).json()["class"] == feast_class


def test_unknown_request_fields_are_ignored_as_feast_does(served):
    """Feast's client always sends include_feature_view_version_metadata; Feast's server ignores
    fields it does not use. Known fields keep their types checked."""
    http, reader = served
    body = {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}}
    plain = post(http, body)
    extra = post(http, {**body, "include_feature_view_version_metadata": False, "allow_registry_cache": True, "x": [1]})
    assert plain.status_code == extra.status_code == 200 and extra.json() == plain.json()
    assert post(http, {**body, "include_feature_view_version_metadata": True, "features": 1}).status_code == 400


def test_health_openapi_and_metrics_across_workers(served):
    http, _ = served
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "manifest": "loaded",
        "project": "featsync_pit",
        "feature_views": 7,  # tests/pit_project: 4, and 3 with zoned timestamps (test_point_in_time)
        "status": "ok",
        "redis": "reachable",
    }
    schema = http.get("/openapi.json").json()
    assert "/get-online-features" in schema["paths"] and "GetOnlineFeaturesRequest" in schema["components"]["schemas"]

    def sample(text: str, name: str, **labels: str) -> float:
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        found = re.search(rf"^{name}{{{re.escape(selector)}}} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def totals() -> tuple[float, ...]:
        text = http.get("/metrics").text
        return (
            sample(text, "featsync_requests_total", code="200", endpoint="/get-online-features"),
            sample(text, "featsync_requests_total", code="404", endpoint="/get-online-features"),
            sample(text, "featsync_entity_lookups_total", feature_view="fv_pair", status="not_found"),
            sample(text, "featsync_entity_lookups_total", feature_view="fv_pair", status="present"),
            sample(text, "featsync_entity_lookups_total", feature_view="fv_user", status="expired"),
            sample(text, "featsync_request_duration_seconds_count", endpoint="/get-online-features"),
        )

    before = totals()
    for _ in range(20):  # two workers: the counts must add up over both processes
        post(
            http, {"features": ["fv_pair:score"], "entities": {"user_id": ["u1", "u1", "x"], "merchant_id": ["m|2", "m9", "m9"]}}
        )
    post(http, {"features": ["fv_user:amount"], "entities": {"user_id": ["stale"]}})
    post(http, {"features": ["fv_user:nope"], "entities": {"user_id": ["u1"]}})
    after = totals()
    assert [a - b for a, b in zip(after, before, strict=True)] == [21, 1, 40, 20, 1, 22]
    assert 'featsync_request_duration_seconds_bucket{endpoint="/get-online-features",le="0.005"}' in http.get("/metrics").text


def test_redis_outage_gives_503_then_recovers(project, private_redis, tmp_path):  # noqa: F811
    port, servers, start = private_redis
    proc, base = start_server(project, f"redis://127.0.0.1:{port}/0", "outage")
    try:
        body = {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}}
        assert httpx.post(f"{base}/get-online-features", json=body).status_code == 200
        servers[-1].send_signal(signal.SIGSTOP)  # hung, not gone: the read's own deadline answers
        try:
            hung = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
            assert hung.status_code == 503 and "no answer within 1.0 s" in hung.json()["detail"], hung.text
            health = httpx.get(f"{base}/health", timeout=10)  # a timeout has no text: its type says why
            assert health.status_code == 503 and health.json()["redis"] == "unreachable: TimeoutError", health.text
        finally:
            servers[-1].send_signal(signal.SIGCONT)
        assert httpx.post(f"{base}/get-online-features", json=body).status_code == 200  # a fresh connection
        servers[-1].kill()
        servers[-1].wait()
        for _ in range(3):  # pooled connections are dead and new ones refused: 503 each time, never a crash
            down = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
            assert down.status_code == 503 and "cannot read from Redis" in down.json()["detail"], down.text
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 503 and health.json()["redis"].startswith("unreachable")
        servers.append(start())
        assert httpx.get(f"{base}/health").status_code == 200
        up = httpx.post(f"{base}/get-online-features", json=body)
        assert up.status_code == 200 and up.json()["results"][1]["statuses"] == ["NOT_FOUND"]  # the new Redis is empty
        assert proc.poll() is None
    finally:
        stop(proc)


def test_reads_from_a_hung_redis_fail_within_seconds(project, private_redis):  # noqa: F811
    """`featsync get` and the Python API against a SIGSTOPped Redis: a clear error within a few
    seconds (one socket timeout, no retry of a timeout). They used push's client, which retries
    a timeout 5 times with backoff: 33 s."""
    from click.testing import CliRunner

    from featsync.cli import main
    from featsync.store import FeatureStore

    port, servers, _ = private_redis
    url = f"redis://127.0.0.1:{port}/0"
    servers[-1].send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = CliRunner().invoke(
            main,
            ["get", "--project-dir", str(project.project_dir), "--profiles-dir", str(project.profiles_dir)]
            + ["--target", project.target or "duckdb", "--redis-url", url, "--features", "fv_user:amount"]
            + ["--entity", "user_id=u1", "--key-prefix", "hung"],
        )
        assert time.monotonic() - started < 10, result.output
        assert result.exit_code != 0 and "cannot read from Redis" in result.output and "Traceback" not in result.output
        store = FeatureStore(project.project_dir, project.target, project.profiles_dir, redis_url=url, key_prefix="hung")
        started = time.monotonic()
        with pytest.raises(OnlineStoreUnavailable, match="cannot read from Redis"):
            store.get_online_features([{"user_id": "u1"}], ["fv_user:amount"])
        assert time.monotonic() - started < 10
    finally:
        servers[-1].send_signal(signal.SIGCONT)


def test_bad_project_fails_before_serving(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "featsync", "serve", "--project-dir", str(tmp_path), "--redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "is not a dbt project" in result.stderr


def test_embedded_redis_without_a_url(project):  # noqa: F811
    """No --redis-url: the embedded redis-server under the project (as `make demo`), reached over its socket."""
    proc, base = start_server(project, None, "embedded")
    try:
        assert httpx.get(f"{base}/health").json()["redis"] == "reachable"
        body = {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}}
        assert httpx.post(f"{base}/get-online-features", json=body).json()["results"][1]["statuses"] == ["NOT_FOUND"]
    finally:
        stop(proc)


def test_feature_service_of_the_example_project(duckdb_build, redis_url):
    """`feature_service` resolves as in training: the example's fraud_detection:v1, in its declared order."""
    proc, base = start_server(duckdb_build.project, redis_url, f"featsync-test-{uuid.uuid4().hex[:8]}", target="dev")
    try:
        body = {"feature_service": "fraud_detection:v1", "entities": {"user_id": ["u0001"], "merchant_id": ["m0001"]}}
        response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
        assert response.status_code == 200, response.text
        by_view = duckdb_build.project.registry().resolve_features(None, "fraud_detection:v1")
        names = response.json()["metadata"]["feature_names"]
        assert names == ["user_id", "merchant_id", *(f for features in by_view.values() for f in features)]
        assert all(r["statuses"] == ["NOT_FOUND"] for r in response.json()["results"][2:])  # nothing pushed here

        # v2's on-demand features: request_data as columns, evaluated after the read, as in Python
        entities = {"user_id": ["u0001", "u0002"], "merchant_id": ["m0001", "m0002"]}
        body = {"feature_service": "fraud_detection", "entities": entities}
        response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
        assert response.status_code == 400 and "needs request field 'transaction_amount' (float8)" in response.text
        body["request_data"] = {
            "transaction_amount": [500.0, 20],
            "event_timestamp": ["2024-01-01T23:00:00Z", "2024-01-02T03:00:00Z"],
        }
        response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
        assert response.status_code == 200, response.text
        answer = response.json()
        results = dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))
        assert results["is_night_transaction"]["values"] == [False, True]  # only request fields: computed
        assert results["amount_vs_avg_ratio"]["values"] == [None, None]  # its stored input was not found
        assert results["amount_vs_avg_ratio"]["statuses"] == ["NOT_FOUND", "NOT_FOUND"]
        body["request_data"]["event_timestamp"] = ["2024-01-01T23:00:00", "2024-01-02T03:00:00Z"]
        response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
        assert response.status_code == 400 and "has no time zone" in response.text
    finally:
        stop(proc)


def test_served_from_a_redis_cluster(project, cluster):  # noqa: F811
    """redis+cluster:// URLs: the async cluster client, one MGET per hash slot; the same answer."""
    load(USERS, PAIRS, PROFILES)
    Pusher(project, redis_client(project, cluster.url), key_prefix="clustered").push()
    proc, base = start_server(project, cluster.url, "clustered")
    try:
        response = httpx.post(f"{base}/get-online-features", json={"features": FEATURES, "entities": ROWS}, timeout=10)
        assert response.status_code == 200, response.text
        values = [r["values"] for r in response.json()["results"]]
        assert values == [
            ROWS["user_id"],
            ROWS["merchant_id"],
            [2, None, None],
            ["y", None, "z"],
            [1.25, None, None],
            ["gold", None, None],
        ]
        assert httpx.get(f"{base}/health").status_code == 200
        # A key holding a hash (foreign data, not an outage): not found, as on one Redis; it was a
        # 503 "cannot read from Redis: WRONGTYPE" for the whole batch.
        client = redis_client(project, cluster.url)
        layout = OnlineReader(project.registry(), client, "clustered").plan(["fv_user:amount"], None, False).views[0].layout
        client.hset(layout.key(["hashed"]), mapping={"a": "b"})
        try:
            body = {"features": ["fv_user:amount"], "entities": {"user_id": ["hashed", "u1"]}}
            response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
            assert response.status_code == 200, response.text
            assert response.json()["results"][1]["statuses"] == ["NOT_FOUND", "PRESENT"]
        finally:
            client.delete(layout.key(["hashed"]))
    finally:
        stop(proc)
