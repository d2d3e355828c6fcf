"""The real Feast SDK (feast[redis]==0.67, in .venv-feast: `make feast-venv`) against a real `featsync serve`.

A Feast user's repository (tests/feast_repo) with only `online_store: {type: remote}` changed
reads the example, pushed to Redis, through featsync's HTTP server: every value, its Python
type and its status must equal what featsync's own Python API gives for the same request.
Feast runs in a subprocess of its own virtualenv: its dependencies clash with ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis

from conftest import ROOT, copy_project, delete_pushed_keys, missing_service
from featsync.online.push import Pusher
from featsync.online.server import FEAST_STATUS
from featsync.online.serving import PRESENT, OnlineReader
from featsync.project import Project
from test_server import start_server, stop

FEAST_PYTHON = ROOT / ".venv-feast" / "bin" / "python"
FEAST_REPO = ROOT / "tests" / "feast_repo"
USER_FEATURES = [
    "user_transaction_features:transaction_count_7d",
    "user_transaction_features:transaction_count_30d",
    "user_transaction_features:amount_avg_30d",
]
EXPIRED = [f"expired-{i}" for i in range(3)]
NIGHT = "2024-04-29T02:30:00+00:00"


@pytest.fixture(scope="module")
def feast_python() -> Path:
    if not FEAST_PYTHON.exists():
        missing_service("The Feast SDK (.venv-feast: run `make feast-venv`)", FileNotFoundError(FEAST_PYTHON))
    return FEAST_PYTHON


@pytest.fixture(scope="module")
def served_example(tmp_path_factory, redis_url, feast_python):
    """A copy of the example shifted to end yesterday (so its TTLs have not run out), pushed under
    a key prefix of its own, plus users whose stored row is past its TTL; served by `featsync serve`."""
    tmp = tmp_path_factory.mktemp("feast")
    root = copy_project(tmp / "project")
    previous = os.environ.get("FEATSYNC_DUCKDB_PATH")
    os.environ["FEATSYNC_DUCKDB_PATH"] = str(tmp / "featsync.duckdb")
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-feast-{uuid.uuid4().hex[:8]}"
    project = Project.open(root, ROOT, "dev")
    proc = None
    try:
        shift = (datetime.now(UTC).date() - date(2024, 4, 30)).days
        build = ["build", "--exclude", "resource_type:test", "resource_type:unit_test"]
        project.run_dbt([*build, "--vars", json.dumps({"featsync_example_shift_days": shift})])
        pusher = Pusher(project, client, key_prefix=prefix)
        pusher.push()
        with duckdb.connect(str(tmp / "featsync.duckdb"), read_only=True) as con:
            users = [r[0] for r in con.execute("select user_id from user_transaction_features order by 1").fetchall()]
            pairs = con.execute("select distinct user_id, merchant_id from user_merchant_features order by 1, 2").fetchall()
            one = "select * from user_transaction_features where user_id = ? limit 1"
            rows = con.sql(one, params=[users[0]]).to_arrow_table()
        # Stored past their TTL, without a Redis expiry (clock skew, a restored snapshot): expired on read.
        layout = pusher.layout(project.registry().feature_view("user_transaction_features"))
        for name in EXPIRED:
            stale = rows.set_column(rows.schema.get_field_index("user_id"), "user_id", pa.array([name]))
            old = pc.subtract(stale["event_timestamp"], pa.scalar(timedelta(days=200), pa.duration("us")))
            stale = stale.set_column(stale.schema.get_field_index("event_timestamp"), "event_timestamp", old)
            client.set(layout.key([name]), layout.encode_values(stale)[0].as_py())
        reader = OnlineReader(project.registry(), client, prefix)
        statuses = reader.get([{"user_id": u} for u in users], features=USER_FEATURES[:1]).statuses[
            USER_FEATURES[0].split(":")[1]
        ]
        users = [u for u, status in zip(users, statuses, strict=True) if status == PRESENT]  # within their TTL
        proc, base = start_server(project, redis_url, prefix, target="dev")
        yield base, reader, users, pairs
    finally:
        if proc is not None:
            stop(proc)
        delete_pushed_keys(project, client, prefix)  # the expired users' keys too: the view's own key pattern
        if previous is None:
            os.environ.pop("FEATSYNC_DUCKDB_PATH", None)
        else:
            os.environ["FEATSYNC_DUCKDB_PATH"] = previous


def cases(users: list[str], pairs: list[tuple[str, str]]) -> list[dict]:
    """Each request as Feast's client takes it; `entity_rows` hold request fields as Feast's do."""
    mixed = []
    for i in range(50):  # present, missing and expired users, interleaved
        mixed.append(EXPIRED[i % 3] if i % 10 == 3 else f"nobody-{i}" if i % 7 == 5 else users[i % len(users)])
    pair_rows = [{"user_id": u, "merchant_id": m} for u, m in pairs[:8]] + [{"user_id": users[0], "merchant_id": "m-none"}]
    amounts = [500.0, 0.0, 12.5, 1e6]
    scored = [{**row, "transaction_amount": amounts[i % 4], "event_timestamp": NIGHT} for i, row in enumerate(pair_rows)]
    return [
        {"name": "single", "features": USER_FEATURES, "entity_rows": [{"user_id": users[0]}]},
        {"name": "batch_of_50", "features": USER_FEATURES, "entity_rows": [{"user_id": u} for u in mixed]},
        {
            "name": "composite_keys",
            "features": ["user_merchant_features:pair_transaction_count_90d", "user_merchant_features:pair_amount_sum_30d"],
            "entity_rows": pair_rows,
        },
        {"name": "feature_service", "feature_service": "fraud_detection", "entity_rows": scored},
        {
            "name": "full_feature_names",
            "features": [*USER_FEATURES, "merchant_risk_features:refund_rate_30d", "merchant_profile_features:risk_tier"],
            "entity_rows": pair_rows,
            "full_feature_names": True,
        },
        {
            "name": "on_demand_request_fields_in_entities",
            "features": [
                "fraud_detection_v2:amount_vs_avg_ratio",
                "fraud_detection_v2:is_night_transaction",
                "user_transaction_features:amount_avg_30d",
            ],
            "entity_rows": [{k: v for k, v in row.items() if k != "merchant_id"} for row in scored],
        },
        {
            "name": "online_read",
            "online_read": ["user_transaction_features", ["transaction_count_7d", "amount_avg_30d"]],
            "entity_rows": [{"user_id": users[1]}, {"user_id": "nobody"}],
        },
        {"name": "unknown_feature_view", "features": ["no_such_view:x"], "entity_rows": [{"user_id": users[0]}]},
        {
            "name": "missing_request_field",
            "features": ["fraud_detection_v2:amount_vs_avg_ratio"],
            "entity_rows": [{"user_id": users[0]}],
        },
    ]


@pytest.fixture(scope="module")
def feast_answers(served_example, feast_python, tmp_path_factory):
    """Every case through the Feast SDK, in one subprocess of .venv-feast (Feast imports slowly)."""
    base, _, users, pairs = served_example
    repo = tmp_path_factory.mktemp("feast-repo")
    shutil.copy(FEAST_REPO / "repo.py", repo / "repo.py")
    (repo / "feature_store.yaml").write_text(
        "project: featsync_feast\nprovider: local\n"
        f"registry: {{registry_type: file, path: {repo / 'registry.db'}}}\n"
        f'online_store: {{type: remote, path: "{base}"}}\n'
        "offline_store: {type: file}\nentity_key_serialization_version: 3\n"
    )
    all_cases = cases(users, pairs)
    result = subprocess.run(
        [str(feast_python), str(FEAST_REPO / "client.py"), str(repo)],
        input=json.dumps(all_cases),
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return {case["name"]: case for case in all_cases}, json.loads(result.stdout)


def featsync_answer(reader: OnlineReader, case: dict) -> tuple[list[str], dict, dict]:
    """The same request through featsync's Python API: names, values and Feast's status names."""
    response = reader.get(
        case["entity_rows"],
        features=case.get("features"),
        feature_service=case.get("feature_service"),
        full_feature_names=case.get("full_feature_names", False),
    )
    values = response.to_dict()
    statuses = {name: ["PRESENT"] * len(column) for name, column in response.entities.items()}
    for name, column in response.statuses.items():
        statuses[name] = [
            ("NULL_VALUE" if value is None else "PRESENT") if status == PRESENT else FEAST_STATUS[status]
            for status, value in zip(column, response.features[name], strict=True)
        ]
    return list(values), values, statuses


@pytest.mark.parametrize(
    "name",
    ["single", "batch_of_50", "composite_keys", "feature_service", "full_feature_names", "on_demand_request_fields_in_entities"],
)
def test_feast_sdk_reads_what_featsync_reads(served_example, feast_answers, name):
    _, reader, _, _ = served_example
    requests, answers = feast_answers
    feast = answers[name]
    assert "error" not in feast, feast.get("error")
    names, values, statuses = featsync_answer(reader, requests[name])
    assert feast["names"] == names
    assert feast["values"] == values
    for column in names:  # the same Python types too (Feast's int64/double/string/bool protos)
        assert [type(v).__name__ for v in feast["values"][column]] == [type(v).__name__ for v in values[column]], column
    assert feast["statuses"] == statuses
    every = {s for column in statuses.values() for s in column}
    if name == "single":
        assert "PRESENT" in every and "NOT_FOUND" not in every
    if name == "batch_of_50":
        assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"} <= every
    if name == "full_feature_names":
        assert "merchant_risk_features__refund_rate_30d" in names
    if name.startswith(("feature_service", "on_demand")):
        assert set(feast["values"]["is_night_transaction"]) == {True}  # 02:30 UTC, sent among the entities
        assert any(v is not None for v in feast["values"]["amount_vs_avg_ratio"])


@pytest.mark.parametrize(
    ("name", "code", "feast_class", "message"),
    [
        ("unknown_feature_view", 404, "FeatureViewNotFoundException", "no feature view named 'no_such_view'"),
        ("missing_request_field", 400, "RequestDataNotFoundInEntityRowsException", "needs request field 'transaction_amount'"),
    ],
)
def test_feast_sdk_gets_featsync_errors_as_feast_exceptions(feast_answers, name, code, feast_class, message):
    """Feast's FeastError.from_error_detail rebuilds the typed exception from the server's error body."""
    _, answers = feast_answers
    answer = answers[name]
    assert answer["error"].startswith(f"Failed to get online features: {code} ")
    rebuilt_class, rebuilt_message = answer["rebuilt"]
    assert rebuilt_class == feast_class and message in rebuilt_message


def test_feast_online_read_gets_event_timestamps(served_example, feast_answers):
    """The per-view read (RemoteOnlineStore.online_read) is the one Feast path that parses
    `event_timestamps`: it takes the first row's from the first feature column, for every row."""
    _, reader, _, _ = served_example
    requests, answers = feast_answers
    rows = requests["online_read"]["entity_rows"]
    expected = reader.get(rows, features=USER_FEATURES[:1] + ["user_transaction_features:amount_avg_30d"])
    event_time = expected.event_timestamps["user_transaction_features"][0]
    assert event_time is not None
    (ts0, present), (ts1, missing) = answers["online_read"]
    assert ts0 == ts1 == event_time.isoformat()  # Feast's own simplification: one event time per call
    assert present == {
        "transaction_count_7d": expected.features["transaction_count_7d"][0],
        "amount_avg_30d": expected.features["amount_avg_30d"][0],
    }
    assert missing == {"transaction_count_7d": None, "amount_avg_30d": None}
