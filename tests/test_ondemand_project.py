"""On-demand features in the example project: declared once, computed by dbt and online alike."""

from __future__ import annotations

import copy
import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

import duckdb
import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner

from conftest import ROOT, copy_project, delete_pushed_keys
from featsync.cli import main
from featsync.errors import USAGE_EXIT, DbtError, DeclarationError, FeatsyncError, NotFoundError
from featsync.offline.training import TrainingSetRequest, get_historical_features
from featsync.ondemand.macro import MACRO_FILE, render_macro
from featsync.online.push import Pusher
from featsync.online.serving import OnlineReader
from featsync.project import Project
from featsync.registry import Registry

V2 = "exposure.featsync.fraud_detection_v2"
WHERE = "models/features/_feature_services.yml: exposure 'fraud_detection_v2'"


@pytest.fixture(scope="module")
def manifest(duckdb_build) -> dict:
    with (duckdb_build.target_path / "manifest.json").open() as fh:
        return json.load(fh)


def duckdb_rows(sql: str) -> list[tuple]:
    """Rows from the DuckDB build through a short-lived connection (dbt opens the file read-write in-process)."""
    with duckdb.connect(os.environ["FEATSYNC_DUCKDB_PATH"], read_only=True) as con:
        return con.execute(sql).fetchall()


def service_v2(registry: Registry):
    return registry.service("fraud_detection:v2")


def test_the_checked_in_macro_is_current(manifest):
    registry = Registry.from_manifest(manifest)
    compiled = {f"{s.name}:v{s.version}": {f.name: f for f in s.on_demand} for s in registry.services.values()}
    assert (ROOT / "macros" / MACRO_FILE).read_text() == render_macro(compiled)


def test_declaration_is_typed(manifest):
    service = service_v2(Registry.from_manifest(manifest))
    assert [(f.name, f.kind, f.default_now) for f in service.request_fields] == [
        ("transaction_amount", "float", False),
        ("event_timestamp", "timestamp", True),
    ]
    assert [(f.name, f.kind, f.inputs) for f in service.on_demand] == [
        ("amount_vs_avg_ratio", "float", ("transaction_amount", "amount_avg_30d")),
        ("is_night_transaction", "bool", ("event_timestamp",)),
    ]


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_training_set_columns_equal_the_online_evaluator(engine, request):
    """Every row of fraud_training_set_v2, as dbt build computed it, equals the Python evaluator on its inputs."""
    build = request.getfixturevalue("duckdb_build" if engine == "duckdb" else "postgres_build")
    service = service_v2(build.manifest_registry())
    sql = (
        "select transaction_amount, amount_avg_30d, event_timestamp, amount_vs_avg_ratio, is_night_transaction"
        " from fraud_training_set_v2"
    )
    if engine == "duckdb":
        rows = duckdb_rows(sql)
    else:
        with request.getfixturevalue("pg_con").cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
    ratio, night = service.on_demand
    assert len(rows) > 2000
    for amount, avg, ts, got_ratio, got_night in rows:
        env = {"transaction_amount": amount, "amount_avg_30d": avg, "event_timestamp": ts.replace(tzinfo=UTC)}
        assert (got_ratio, got_night) == (ratio.evaluate(env), night.evaluate(env))
    assert {r[4] for r in rows} == {True, False}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, redis_url):
    """The example shifted to end yesterday (as `make demo` does, so Redis has not expired it) and pushed.

    Its own DuckDB file (same name, so relation names match the shared manifest); the
    session's FEATSYNC_DUCKDB_PATH is restored afterwards.
    """
    tmp = tmp_path_factory.mktemp("ondemand")
    shift = (datetime.now(UTC).date() - date(2024, 4, 30)).days
    previous = os.environ["FEATSYNC_DUCKDB_PATH"] if "FEATSYNC_DUCKDB_PATH" in os.environ else None
    os.environ["FEATSYNC_DUCKDB_PATH"] = str(tmp / "featsync.duckdb")
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    try:
        project = Project.open(ROOT, ROOT, "dev")
        build = ["build", "--exclude", "resource_type:test", "resource_type:unit_test"]
        project.run_dbt([*build, "--vars", json.dumps({"featsync_example_shift_days": shift})], target_path=tmp / "target")
        Pusher(project, client, key_prefix=prefix).push()
        yield project, client, prefix
    finally:
        delete_pushed_keys(Project.open(ROOT, ROOT, "dev"), client, prefix)
        if previous is None:
            os.environ.pop("FEATSYNC_DUCKDB_PATH", None)
        else:
            os.environ["FEATSYNC_DUCKDB_PATH"] = previous


def test_online_equals_the_training_set_for_the_same_request(pushed):
    """The same entities, amount and time: `get_online_features` and the macro agree on every feature."""
    project, client, prefix = pushed
    now = datetime.now(UTC).replace(microsecond=0)
    pairs = duckdb_rows("select distinct user_id, merchant_id from stg_fraud_labels order by user_id, merchant_id limit 40")
    n = len(pairs)
    amounts = ([0.0, 500.0, -12.5, None, 1e12] * 8)[:n]
    reader = OnlineReader(project.registry(), client, prefix, now=lambda: now.timestamp())
    response = reader.get(
        [{"user_id": u, "merchant_id": m} for u, m in pairs],
        feature_service="fraud_detection:v2",
        request_data={"transaction_amount": amounts, "event_timestamp": now},
    )
    online = response.to_dict()
    spine = pa.table(
        {
            "row": list(range(n)),
            "user_id": [u for u, _ in pairs],
            "merchant_id": [m for _, m in pairs],
            "event_timestamp": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "transaction_amount": pa.array(amounts, pa.float64()),
        }
    )
    offline = get_historical_features(project, spine, TrainingSetRequest(None, "fraud_detection:v2", "event_timestamp"))
    offline = offline.sort_by("row").to_pydict()
    for name in ("amount_avg_30d", "amount_vs_avg_ratio", "is_night_transaction"):
        assert online[name] == offline[name], name
    ratios = online["amount_vs_avg_ratio"]
    assert any(v is not None for v in ratios) and None in ratios  # NULL amount / no average
    assert online["is_night_transaction"] == [now.hour < 6] * n
    assert set(response.statuses["amount_vs_avg_ratio"]) <= {"present", "not_found"}


class NoOffset(tzinfo):
    """A tzinfo that knows no offset: Python calls such a datetime naive."""

    def utcoffset(self, dt):
        return None

    def tzname(self, dt):
        return None

    def dst(self, dt):
        return None


def test_request_data_errors_name_the_field(pushed):
    project, client, prefix = pushed
    reader = OnlineReader(project.registry(), client, prefix)
    rows = [{"user_id": "u0001", "merchant_id": "m0001"}]
    for request_data, message in [
        ({}, "needs request field 'transaction_amount' (float8)"),
        ({"transaction_amount": "500"}, "request field 'transaction_amount' is float8; got str '500'"),
        ({"transaction_amount": 1.0, "amount": 2}, "unknown request field(s) amount"),
        ({"transaction_amount": [1.0, 2.0]}, "has 2 values for 1 entity rows"),
        ({"transaction_amount": 1.0, "event_timestamp": "yesterday"}, "'yesterday' is not an RFC 3339 timestamp"),
        # the one rule for a time given as text (featsync.times), as for pushed rows
        (
            {"transaction_amount": 1.0, "event_timestamp": "2016-12-31T23:59:60Z"},
            "request field 'event_timestamp': '2016-12-31T23:59:60Z' is a leap second (:60)",
        ),
        ({"transaction_amount": 1.0, "event_timestamp": "2024-01-01T23:00:00"}, "'2024-01-01T23:00:00' has no time zone"),
        ({"transaction_amount": 1.0, "event_timestamp": datetime(2024, 1, 1, 23)}, "has no time zone; featsync times are UTC"),
        # a tzinfo without an offset leaves the datetime naive (astimezone would read it in local time)
        (
            {"transaction_amount": 1.0, "event_timestamp": datetime(2024, 1, 1, 23, tzinfo=NoOffset())},
            "has no time zone; featsync times are UTC",
        ),
        ({"transaction_amount": 10**400}, "request field 'transaction_amount' is float8; 1000"),
    ]:
        with pytest.raises(FeatsyncError) as info:
            reader.get(rows, feature_service="fraud_detection:v2", request_data=request_data)
        assert message in str(info.value)
    with pytest.raises(FeatsyncError, match="no on-demand features requested, so request_data"):
        reader.get(rows, feature_service="fraud_detection:v1", request_data={"transaction_amount": 1.0})
    # event_timestamp defaults to now; a zoned one is converted to UTC
    response = reader.get(rows, feature_service="fraud_detection:v2", request_data={"transaction_amount": 3})
    assert isinstance(response.features["is_night_transaction"][0], bool)
    response = reader.get(
        rows,
        feature_service="fraud_detection:v2",
        request_data={"transaction_amount": 3, "event_timestamp": datetime(2024, 1, 2, 1, tzinfo=timezone(timedelta(hours=2)))},
    )
    assert response.features["is_night_transaction"] == [False]
    # RFC 3339 as pushed rows read it: lower-case t/z, nanoseconds cut (01:59:59.999999999 is still night)
    for text, night in (("2024-01-02t01:59:59.999999999z", True), ("2024-01-02T05:59:59.9999999+00:00", True)):
        response = reader.get(
            rows, feature_service="fraud_detection:v2", request_data={"transaction_amount": 3, "event_timestamp": text}
        )
        assert response.features["is_night_transaction"] == [night], text


def test_cli_get_request(pushed):
    project, _, prefix = pushed
    base = ["get", "--project-dir", str(ROOT), "--profiles-dir", str(ROOT), "--target", "dev", "--service", "fraud_detection"]
    base += ["--entity", "user_id=u0137", "--entity", "merchant_id=m0035", "--key-prefix", prefix, "--json"]
    runner = CliRunner()
    result = runner.invoke(
        main, [*base, "--request", "transaction_amount=500", "--request", "event_timestamp=2024-04-29T02:30:00Z"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # the request-only feature is computed from the request; the ratio from the stored average
    avg = out["amount_avg_30d"][0]
    assert out["is_night_transaction"] == [True]
    assert out["amount_vs_avg_ratio"] == [500 / avg if avg else None]
    assert out["amount_vs_avg_ratio__status"] == out["amount_avg_30d__status"]
    result = runner.invoke(main, [*base, "--request", "transaction_amount=abc"])
    # a malformed value is a usage error; a field the service does not declare, an unknown name
    assert result.exit_code == USAGE_EXIT and "request field 'transaction_amount' is float8; cannot read 'abc'" in result.output
    result = runner.invoke(
        main, [*base, "--request", "transaction_amount=1", "--request", "event_timestamp=2024-04-29t02:30:00z"]
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["is_night_transaction"] == [True], result.output
    result = runner.invoke(main, [*base, "--request", "transaction_amount=1", "--request", "event_timestamp=2024-04-29T02:30:00"])
    assert result.exit_code == USAGE_EXIT and "request field 'event_timestamp': '2024-04-29T02:30:00' has no time zone" in (
        result.output
    )
    result = runner.invoke(main, [*base, "--request", "amount=1"])
    assert result.exit_code == 2 and "unknown request field 'amount'" in result.output
    # an on-demand feature by reference takes its service's request fields; a stored one has none
    by_ref = [a for a in base if a not in ("--service", "fraud_detection")]
    result = runner.invoke(
        main, [*by_ref, "--features", "fraud_detection_v2:amount_vs_avg_ratio", "--request", "transaction_amount=500"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["amount_vs_avg_ratio"] == out["amount_vs_avg_ratio"]
    result = runner.invoke(
        main, [*by_ref, "--features", "user_transaction_features:amount_avg_30d", "--request", "transaction_amount=500"]
    )
    assert result.exit_code == USAGE_EXIT and "--request needs --service or an on-demand feature" in result.output


# -- declarations rejected at load, with file, node and key ---------------------------------


def rejected(manifest: dict, mutate) -> str:
    broken = copy.deepcopy(manifest)
    mutate(broken["exposures"][V2]["config"]["meta"]["feature_service"])
    with pytest.raises(DeclarationError) as info:
        Registry.from_manifest(broken)
    return str(info.value)


def set_expression(expression: str, name: str = "amount_vs_avg_ratio"):
    return lambda spec: spec["on_demand"][name].update(expression=expression)


@pytest.mark.parametrize(
    ("mutate", "key", "message"),
    [
        (
            set_expression("transaction_amount / amount_avg_7d"),
            "on_demand.amount_vs_avg_ratio.expression",
            "unknown name 'amount_avg_7d'",
        ),
        (set_expression("amount / amount_avg_30d"), "on_demand.amount_vs_avg_ratio.expression", "unknown name 'amount'"),
        (
            set_expression("ln(transaction_amount)"),
            "on_demand.amount_vs_avg_ratio.expression",
            "function LN(transaction_amount) is not supported",
        ),
        (set_expression("risk_tier + 1"), "on_demand.amount_vs_avg_ratio.expression", "needs numbers; 'risk_tier' is text"),
        (set_expression("transaction_amount / (select 1)"), "on_demand.amount_vs_avg_ratio.expression", "subqueries"),
        (
            lambda s: s["on_demand"]["amount_vs_avg_ratio"].update(data_type="text"),
            "on_demand.amount_vs_avg_ratio.data_type",
            "not supported",
        ),
        (lambda s: s["on_demand"]["amount_vs_avg_ratio"].update(typo=1), "on_demand.amount_vs_avg_ratio.typo", "unknown key"),
        (lambda s: s["request_fields"].update(extra="float8"), "request_fields.extra", "is not used by any on-demand feature"),
        (
            lambda s: s["request_fields"].update(transaction_amount={"data_type": "json"}),
            "request_fields.transaction_amount.data_type",
            "not supported",
        ),
        (
            lambda s: s["request_fields"]["transaction_amount"].update(default="now"),
            "request_fields.transaction_amount.default",
            "only a timestamp",
        ),
        (lambda s: s["request_fields"].update(risk_tier="text"), "request_fields.risk_tier", "also a feature of the service"),
        (
            lambda s: s["on_demand"].update(risk_tier={"expression": "1", "data_type": "bigint"}),
            "on_demand.risk_tier",
            "already a feature",
        ),
        (lambda s: s.update(on_demand=["x"]), "on_demand", "must be a mapping"),
    ],
)
def test_bad_declarations_are_rejected_at_load(manifest, mutate, key, message):
    text = rejected(manifest, mutate)
    assert f"{WHERE}: feature_service.{key}: " in text and message in text, text


def test_stale_generated_macro_fails_dbt_until_featsync_regenerates_it(tmp_path, monkeypatch):
    """dbt build without featsync never computes an expression the YAML no longer says."""
    monkeypatch.setenv("FEATSYNC_DUCKDB_PATH", str(tmp_path / "stale.duckdb"))
    root = copy_project(tmp_path / "project")
    services = root / "models" / "features" / "_feature_services.yml"
    services.write_text(
        services.read_text().replace("transaction_amount / amount_avg_30d", "transaction_amount / amount_max_30d")
    )
    project = Project.open(root, ROOT, "dev")
    with pytest.raises(DbtError, match="featsync_on_demand.sql is missing or out of date"):
        project.run_dbt(["compile", "--select", "fraud_training_set_v2"], target_path=tmp_path / "target")
    project.registry()  # any featsync command loads the registry and rewrites the macro
    assert "amount_max_30d" in (root / "macros" / MACRO_FILE).read_text()
    result = project.run_dbt(["compile", "--select", "fraud_training_set_v2"], target_path=tmp_path / "target")
    assert "NULLIF(featsync_joined.amount_max_30d" in result.result.results[0].node.compiled_code


def test_describe_shows_request_fields_and_on_demand_features(duckdb_build):
    args = ["describe", "fraud_detection", "--project-dir", str(ROOT), "--profiles-dir", str(ROOT), "--target", "dev"]
    data = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    assert [(f["name"], f["data_type"], f["default"]) for f in data["request_fields"]] == [
        ("transaction_amount", "float8", None),
        ("event_timestamp", "timestamp", "now"),
    ]
    assert [(f["name"], f["expression"]) for f in data["on_demand"]] == [
        ("amount_vs_avg_ratio", "transaction_amount / amount_avg_30d"),
        ("is_night_transaction", "extract(hour from event_timestamp) < 6"),
    ]
    table = CliRunner().invoke(main, args).output
    assert "On-demand features" in table and "extract(hour from event_timestamp) < 6" in table


def test_on_demand_features_by_reference_and_request_fields_in_entity_rows(pushed):
    """Feast style: '<on-demand view>:<feature>' (the service version's exposure, or the service's
    name for its latest version) computes as the service does; request fields may be entity columns."""
    project, client, prefix = pushed
    reader = OnlineReader(project.registry(), client, prefix)
    rows = [{"user_id": "u0137", "merchant_id": "m0035"}, {"user_id": "nobody", "merchant_id": "m0035"}]
    request = {"transaction_amount": [500.0, 7.0], "event_timestamp": "2024-04-29T02:30:00Z"}
    service = reader.get(rows, feature_service="fraud_detection:v2", request_data=request).to_dict()
    scored = [
        {**row, "transaction_amount": a, "event_timestamp": request["event_timestamp"]}
        for row, a in zip(rows, [500.0, 7.0], strict=True)
    ]
    by_ref = reader.get(scored, features=["fraud_detection_v2:amount_vs_avg_ratio", "merchant_risk_features:refund_rate_30d"])
    # only what was asked: the ratio's input (amount_avg_30d) is read but not returned
    assert list(by_ref.features) == ["amount_vs_avg_ratio", "refund_rate_30d"]
    assert by_ref.features["amount_vs_avg_ratio"] == service["amount_vs_avg_ratio"]
    assert by_ref.features["amount_vs_avg_ratio"][0] is not None and by_ref.statuses["amount_vs_avg_ratio"][1] == "not_found"
    latest = reader.get(scored, features=["fraud_detection:*"], full_feature_names=True)
    assert latest.features == {
        "fraud_detection__amount_vs_avg_ratio": service["amount_vs_avg_ratio"],
        "fraud_detection__is_night_transaction": [True, True],
    }
    with pytest.raises(NotFoundError, match="on-demand feature view 'fraud_detection_v2' has no feature 'nope'") as info:
        reader.get(scored, features=["fraud_detection_v2:nope"])
    assert info.value.kind == "on-demand feature"
    with pytest.raises(FeatsyncError, match="request field 'transaction_amount' is given twice"):
        reader.plan(["fraud_detection_v2:amount_vs_avg_ratio"], None, False).request_columns(
            {"user_id": ["u1"], "transaction_amount": [1.0]}, {"transaction_amount": [2.0]}
        )
    with pytest.raises(FeatsyncError, match="needs request field 'transaction_amount'"):
        reader.get(rows, features=["fraud_detection_v2:amount_vs_avg_ratio"])
    # given in some rows only: an error naming the row (the others' field was silently NULL)
    with pytest.raises(FeatsyncError, match="entity row 1 lacks request field 'transaction_amount', which other rows give"):
        reader.get([scored[0], rows[1]], features=["fraud_detection_v2:amount_vs_avg_ratio"])


def test_feature_store_takes_feast_calls_as_feast_writes_them(pushed, redis_url):
    """`from featsync import FeatureStore`; Feast's positional order, a service by name, a dict of
    columns, request fields among the entities, to_dict/to_df/to_arrow; the earlier order too."""
    from featsync import FeatureStore

    project, _, prefix = pushed
    store = FeatureStore(ROOT, target="dev", profiles_dir=ROOT, redis_url=redis_url, key_prefix=prefix)
    features = ["user_transaction_features:transaction_count_7d", "merchant_profile_features:risk_tier"]
    rows = [{"user_id": "u0137", "merchant_id": "m0035"}, {"user_id": "nobody", "merchant_id": "m0035"}]
    expected = store.get_online_features(entity_rows=rows, features=features).to_dict()  # featsync's keywords
    assert store.get_online_features(features, rows).to_dict() == expected  # Feast's positional order
    assert store.get_online_features(rows, features).to_dict() == expected  # featsync's earlier order
    columns = {"user_id": ["u0137", "nobody"], "merchant_id": ["m0035", "m0035"]}
    response = store.get_online_features(features=features, entity_rows=columns)
    assert response.to_dict() == expected and response.statuses["transaction_count_7d"][1] == "not_found"
    assert response.to_arrow().to_pydict() == expected
    df = response.to_df()  # pandas: a missing integer is NaN there
    assert list(df.columns) == list(expected) and df["risk_tier"].tolist() == expected["risk_tier"]
    scored = {**columns, "transaction_amount": [500.0, 1.0], "event_timestamp": ["2024-04-29T02:30:00Z"] * 2}
    by_name = store.get_online_features("fraud_detection", scored).to_dict()
    by_keyword = store.get_online_features(
        entity_rows=rows, feature_service="fraud_detection", request_data={k: scored[k] for k in scored if k not in columns}
    ).to_dict()
    assert by_name == by_keyword and by_name["is_night_transaction"] == [True, True]
    by_object = store.get_online_features(store.registry.service("fraud_detection"), scored).to_dict()
    assert by_object == by_name
