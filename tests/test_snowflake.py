"""The whole project on Snowflake, as far as it can be proven without an account.

The example is built twice with dbt-snowflake against the emulator (tests/snowflake_emulator:
fakesnow over HTTP, with the shims listed there), then compared row for row with DuckDB;
every compiled model parses as Snowflake SQL; featsync's Snowflake reader (the connector's
Arrow batches) serves training sets and pushes through the CLI (tests/test_warehouse_cli.py).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest
import sqlglot
import yaml
from click.testing import CliRunner

from conftest import EXAMPLE_NOW, ROOT, SNOWFLAKE_EMULATOR_PROFILES, assert_jobs_push_what_one_job_pushes, copy_project
from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.offline.warehouse import SnowflakeWarehouse, connect

# Every table the build leaves behind: feature views, the snapshot and the training sets.
TABLES = {
    "user_transaction_features": "user_id, event_timestamp",
    "user_merchant_features": "user_id, merchant_id, event_timestamp",
    "merchant_risk_features": "merchant_id, event_timestamp",
    "product_sales_features": "product_id, event_timestamp",
    "merchant_profile_features": "merchant_id, event_timestamp",
    "user_last_transaction": "user_id, event_timestamp",
    "merchants_snapshot": "merchant_id, dbt_valid_from",
    "fraud_training_set_v1": "transaction_id",
    "fraud_training_set_v2": "transaction_id",
    "fraud_training_set_v3": "transaction_id",
}


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def assert_same_rows(expected: list[tuple], actual: list[tuple], what: str) -> None:
    assert len(expected) == len(actual), f"{what}: {len(expected)} rows expected, {len(actual)} read"
    for e, a in zip(expected, actual, strict=True):
        assert all(same(x, y) for x, y in zip(e, a, strict=True)), (what, e, a)


def duckdb_rows(duck_ro, relation: str, order: str, columns: list[str] | None = None) -> tuple[list[str], list[tuple]]:
    select = ", ".join(columns) if columns else "*"
    rows = duck_ro.execute(f"select {select} from {relation} order by {order}").fetchall()
    return [d[0] for d in duck_ro.description], rows


def arrow_rows(table: pa.Table, columns: list[str], order: str) -> list[tuple]:
    table = table.select(columns).sort_by([(c.strip(), "ascending") for c in order.split(",")])
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def snapshot_relation(table: str) -> str:
    return "main_snapshots.merchants_snapshot" if table == "merchants_snapshot" else table


@pytest.mark.parametrize("table", sorted(TABLES))
def test_emulated_snowflake_build_equals_duckdb(snowflake_build, duck_ro, table):
    """After two builds on the emulator every table equals DuckDB's: a sorted full-table diff."""
    order = TABLES[table]
    columns, expected = duckdb_rows(duck_ro, snapshot_relation(table), order)
    if table == "merchants_snapshot":  # dbt_scd_id is an md5 of engine-specific timestamp text
        columns = [c for c in columns if c != "dbt_scd_id"]
        _, expected = duckdb_rows(duck_ro, snapshot_relation(table), order, columns)
    schema = snowflake_build.schema + ("_SNAPSHOTS" if table == "merchants_snapshot" else "")
    with connect(snowflake_build.project) as warehouse:
        assert isinstance(warehouse, SnowflakeWarehouse)
        actual = warehouse.fetch_arrow(f"select * from {schema}.{table}")
    assert_same_rows(expected, arrow_rows(actual, columns, order), table)


def test_every_compiled_model_parses_as_snowflake_sql(snowflake_build):
    """dbt's compiled SQL for the snowflake target is valid Snowflake syntax (sqlglot), model by model."""
    manifest = json.loads((snowflake_build.target_path / "manifest.json").read_text())
    models = {n["name"]: n["compiled_code"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert {"fraud_training_set_v1", "fraud_training_set_v2", "user_transaction_features"} <= set(models)
    for name, sql in models.items():
        tree = sqlglot.parse_one(sql, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
        assert tree is not None, name
    for name in ("fraud_training_set_v1", "fraud_training_set_v2"):
        joins = list(sqlglot.parse_one(models[name], read="snowflake").find_all(sqlglot.exp.Join))
        assert any(j.args.get("match_condition") is not None for j in joins), f"{name} does not use ASOF MATCH_CONDITION"


def test_emulator_profile_is_the_shipped_snowflake_target():
    """The tests' profile differs from the shipped `snowflake` target only by where the emulator listens."""
    shipped = yaml.safe_load((ROOT / "profiles.yml").read_text())["featsync"]["outputs"]["snowflake"]
    emulated = yaml.safe_load((SNOWFLAKE_EMULATOR_PROFILES / "profiles.yml").read_text())["featsync"]["outputs"]["snowflake"]
    extra = {k: emulated.pop(k) for k in ("host", "port", "protocol", "connect_retries")}
    assert emulated == shipped and extra["protocol"] == "http"


def test_a_spine_column_name_that_is_sql_is_refused(snowflake_build):
    """The scratch table's DDL is built from the spine's column names: only plain names get in."""
    from featsync.offline.training import TrainingSetRequest, get_historical_features

    spine = pa.table(
        {
            "user_id": ["u0001"],
            "event_timestamp": pa.array([datetime(2024, 3, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "x int); drop table stg_fraud_labels; --": [1],
        }
    )
    request = TrainingSetRequest(features=["user_transaction_features:transaction_count_7d"])
    with pytest.raises(FeatsyncError, match="spine column name 'x int\\); drop table .* is not a plain SQL name"):
        get_historical_features(snowflake_build.project, spine, request)


def validate_json(*args: str) -> tuple[int, dict[str, dict]]:
    result = CliRunner().invoke(main, ["validate", *args, "--now", EXAMPLE_NOW, "--json"])
    return result.exit_code, {v["feature_view"]: v for v in json.loads(result.stdout)}


def test_cli_validate_on_snowflake(sf_args, duck_ro):
    """Every example suite passes on Snowflake, read through the connector's Arrow batches: whole tables,
    then the documented sample of whole entities, whose rescaled row-count bounds still pass."""
    code, views = validate_json(*sf_args)
    assert code == 0, views
    assert {(v["engine"], v["status"], v["sampled"]) for v in views.values()} == {("snowflake", "passed", False)}
    for name, view in views.items():
        assert view["rows_total"] == duck_ro.execute(f"select count(*) from {name}").fetchone()[0], name
    code, sampled = validate_json(*sf_args, "--select", "user_transaction_features", "--max-rows", "500")
    (view,) = sampled.values()
    assert code == 0 and view["status"] == "passed" and view["sampled"], view
    assert 0 < view["rows_validated"] < view["rows_total"] == views["user_transaction_features"]["rows_total"]
    (count,) = [r for r in view["results"] if r["expectation"] == "expect_table_row_count_to_be_between"]
    assert count["observed_value"] == view["rows_total"]


def test_cli_validate_on_snowflake_finds_bad_values(snowflake_build, tmp_path):
    """A failing expectation fails on Snowflake too (not an empty metric read as a pass), with the bad values."""
    project = copy_project(tmp_path / "project")
    suite = project / "expectations" / "merchant_profile_features.json"
    spec = json.loads(suite.read_text())
    spec["expectations"].append(
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "risk_tier", "value_set": ["low", "medium"]}}
    )
    suite.write_text(json.dumps(spec))
    args = ["--project-dir", str(project), "--profiles-dir", str(SNOWFLAKE_EMULATOR_PROFILES), "--target", "snowflake"]
    code, views = validate_json(*args, "--select", "merchant_profile_features")
    (failure,) = [r for r in views["merchant_profile_features"]["results"] if r["status"] != "passed"]
    assert code == 4 and failure["column"] == "risk_tier" and failure["sample_values"] == ["high"], failure
    assert failure["unexpected_count"] > 0


def test_snowflake_reader_streams_arrow_batches(snowflake_build):
    with connect(snowflake_build.project) as warehouse:
        batches = list(warehouse.arrow_batches("select seq4() as n from table(generator(rowcount => 2500))", batch_rows=1000))
        assert max(b.num_rows for b in batches) <= 1000 and len(batches) >= 3
        assert pa.Table.from_batches(batches).column("n").to_pylist() == list(range(2500))
        assert batches[0].schema.names == ["n"]
        empty = warehouse.fetch_arrow(f"select user_id from {snowflake_build.schema}.user_transaction_features where 1 = 0")
        assert empty.num_rows == 0 and empty.column_names == ["user_id"]


def test_asof_shim_keeps_snowflake_semantics(snowflake_build):
    """The emulator's MATCH_CONDITION rewrite keeps every left row, picks the latest match at or before
    it per key, and gives NULLs where nothing matches, as Snowflake's ASOF JOIN does."""
    sql = """
        with l as (select * from (values ('a', 10), ('a', 25), ('b', 5), ('c', 1)) as v (k, ts)),
             r as (select * from (values ('a', 10, 'x'), ('a', 20, 'y'), ('b', 6, 'z')) as v (k, ts, val))
        select l.k, l.ts, r.val from l asof join r match_condition (l.ts >= r.ts) on l.k = r.k
    """
    with connect(snowflake_build.project) as warehouse:
        table = warehouse.fetch_arrow(sql)
    assert arrow_rows(table, ["k", "ts", "val"], "k, ts") == [("a", 10, "x"), ("a", 25, "y"), ("b", 5, None), ("c", 1, None)]


def test_push_with_jobs_slices_in_snowflake(snowflake_build, redis_url):
    """`push --jobs 3 --target snowflake`: each slice is read with mod(mod(hash(keys), 3) + 3, 3)."""
    import redis

    assert_jobs_push_what_one_job_pushes(snowflake_build.project, redis.Redis.from_url(redis_url), EXAMPLE_NOW)
