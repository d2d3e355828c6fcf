"""The whole project on Spark: a real local Spark (dbt-spark's session method, parquet tables).

The example is built once on Spark (conftest.spark_build: one JVM for the run), then compared
row for row with DuckDB; the snapshot's parquet rewrite (no MERGE) is checked against
DuckDB's MERGE after the source changed; the point-in-time plan is a window over a shuffle,
never a join; featsync's Spark reader (Arrow batches, one partition at a time) serves
training sets, pushes, validate and the push gate through the CLI.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

from conftest import (
    EXAMPLE_NOW,
    ROOT,
    SPARK_SCHEMA,
    assert_jobs_push_what_one_job_pushes,
    copy_project,
    delete_pushed_keys,
)
from featsync.cli import main
from featsync.errors import CHECK_FAILED_EXIT
from featsync.offline.warehouse import SparkWarehouse, connect
from featsync.project import Project
from featsync.quality import report
from featsync.quality import validate as quality
from test_quality import NOW, SUITE_SIZES, VIEWS, by_view, online_keys, push_args, run_cli
from test_quality import prefix as prefix  # noqa: F401 - the fixture, shared
from test_snowflake import TABLES, arrow_rows, assert_same_rows, duckdb_rows
from test_warehouse_cli import assert_training_set_equals_duckdb


def spark_table(spark_build, table: str) -> str:
    schema = SPARK_SCHEMA + ("_snapshots" if table == "merchants_snapshot" else "")
    return f"{schema}.{table}"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_spark_build_equals_duckdb(spark_build, duck_ro, table):
    """Feature views, the snapshot (built, then snapshotted again) and both training sets equal DuckDB's."""
    order = TABLES[table]
    relation = "main_snapshots.merchants_snapshot" if table == "merchants_snapshot" else table
    columns, expected = duckdb_rows(duck_ro, relation, order)
    if table == "merchants_snapshot":  # dbt_scd_id is an md5 of engine-specific timestamp text
        columns = [c for c in columns if c != "dbt_scd_id"]
        _, expected = duckdb_rows(duck_ro, relation, order, columns)
    with connect(spark_build.project) as warehouse:
        assert isinstance(warehouse, SparkWarehouse)
        actual = warehouse.fetch_arrow(f"select * from {spark_table(spark_build, table)}")
    assert_same_rows(expected, arrow_rows(actual, columns, order), table)


def test_spark_timestamps_are_naive_utc(spark_build):
    """TIMESTAMP_NTZ in the tables, naive Arrow timestamps out: the same instants as DuckDB's."""
    with connect(spark_build.project) as warehouse:
        rows = warehouse.fetch_arrow(f"describe {SPARK_SCHEMA}.user_transaction_features").to_pylist()
        table = warehouse.fetch_arrow(f"select event_timestamp from {SPARK_SCHEMA}.user_transaction_features limit 1")
    described = {r["col_name"]: r["data_type"] for r in rows}
    assert described["event_timestamp"] == described["created_timestamp"] == "timestamp_ntz"
    assert table.schema.field("event_timestamp").type == pa.timestamp("us")


# -- the snapshot on parquet: a rewrite that equals dbt's MERGE ---------------------------


def build_snapshot_twice(project: Project, target_path: Path) -> None:
    """The snapshot's source and the snapshot, then again with every merchant updated a day later."""
    project.run_dbt(["build", "--select", "+merchants_snapshot"], target_path=target_path)
    shifted = ["--vars", "{featsync_example_shift_days: 1}"]
    project.run_dbt(["build", "--select", "stg_merchants", "merchants_snapshot", *shifted], target_path=target_path)


def test_spark_snapshot_rewrite_equals_duckdb_merge(spark_build, tmp_path, monkeypatch):
    """Every merchant changes between two snapshot runs: DuckDB closes and inserts versions with
    MERGE, Spark with the parquet rewrite (macros/spark/snapshot.sql). Same versions, same ranges."""
    monkeypatch.setenv("FEATSYNC_DUCKDB_PATH", str(tmp_path / "scd2.duckdb"))
    monkeypatch.setenv("FEATSYNC_SPARK_SCHEMA", "featsync_scd2")
    project = copy_project(tmp_path / "project")
    build_snapshot_twice(Project.open(project, ROOT, "dev"), tmp_path / "target-duckdb")
    build_snapshot_twice(Project.open(project, ROOT, "spark"), tmp_path / "target-spark")
    columns = "merchant_id, category, risk_tier, updated_at, dbt_valid_from, dbt_valid_to, dbt_updated_at"
    order = "merchant_id, dbt_valid_from"
    with duckdb.connect(str(tmp_path / "scd2.duckdb"), read_only=True) as con:
        expected = con.execute(f"select {columns} from main_snapshots.merchants_snapshot order by {order}").fetchall()
    with connect(spark_build.project) as warehouse:
        actual = warehouse.fetch_arrow(f"select {columns} from featsync_scd2_snapshots.merchants_snapshot")
        tables = warehouse.fetch_arrow("show tables in featsync_scd2_snapshots").to_pylist()
        # SHOW TABLES lists the session's temporary views under every schema: only real tables count.
        leftovers = [t["tableName"] for t in tables if not t["isTemporary"]]
        warehouse.execute("drop schema featsync_scd2 cascade")
        warehouse.execute("drop schema featsync_scd2_raw cascade")
        warehouse.execute("drop schema featsync_scd2_snapshots cascade")
    assert len(expected) == 80  # 40 merchants, each closed once and re-opened
    assert sum(row[5] is None for row in expected) == 40
    assert_same_rows(expected, arrow_rows(actual, [c.strip() for c in columns.split(",")], order), "merchants_snapshot")
    assert leftovers == ["merchants_snapshot"]  # no scratch table or staging view left behind


# -- the point-in-time plan ------------------------------------------------------------------


def test_point_in_time_plan_is_a_window_over_a_shuffle_not_a_join(spark_build, spark_session, tmp_path):
    """fraud_detection:v2 (four views, as_of='available') over a spine table: per view a shuffle by
    the entity keys and a window; no join of any kind, so no range join and no cartesian product."""
    views = ("user_transaction_features", "merchant_risk_features", "user_merchant_features", "merchant_profile_features")
    inline = "".join(f"-- depends_on: {{{{ ref('{v}') }}}}\n" for v in views) + (
        "{{ featsync.point_in_time_join(spine='(select transaction_id, user_id, merchant_id, event_timestamp, "
        "transaction_amount from ' ~ ref('fraud_training_set_v1') ~ ')', feature_service='fraud_detection:v2', "
        "as_of='available') }}"
    )
    compiled = spark_build.project.run_dbt(["compile", "--inline", inline], target_path=tmp_path)
    sql = compiled.result.results[0].node.compiled_code
    plan = "\n".join(r[0] for r in spark_session.sql(f"explain formatted {sql}").collect())
    physical = plan.split("\n\n(1)")[0]
    assert "Join" not in physical and "Cartesian" not in physical, physical
    assert physical.count("Window") >= 4 and physical.count("Exchange") >= 4 and "hashpartitioning" in plan, plan


# -- featsync's Spark reader -----------------------------------------------------------------


def test_spark_rows_come_out_in_bounded_arrow_batches(spark_session):
    """One partition at a time (toArrowBatchRdd served like toLocalIterator: a Spark job per
    partition, the next one prefetched), batches of at most batch_rows rows, in the query's
    order, with the schema of an empty result too."""
    sql = "select id, id * 0.5d as x, cast(id as string) as s from range(0, 200000, 1, 8)"
    tracker = spark_session.sparkContext.statusTracker()
    spark_session.sparkContext.setJobGroup("featsync-batches", "bounded batches test")
    try:
        with connect(Project.open(ROOT, ROOT, "spark")) as warehouse:
            stream = warehouse.arrow_batches(sql, batch_rows=10_000)
            batches = [next(stream)]
            jobs_after_first = len(tracker.getJobIdsForGroup("featsync-batches"))
            batches += list(stream)
            jobs_after_all = len(tracker.getJobIdsForGroup("featsync-batches"))
            empty = list(warehouse.arrow_batches("select id from range(0, 10) where id < 0"))
    finally:
        spark_session.sparkContext.setJobGroup("", "")
    assert jobs_after_first <= 2 < jobs_after_all == 8  # not one collect of every partition
    assert max(b.num_rows for b in batches) <= 10_000 and len(batches) >= 20
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(200_000))
    assert len(empty) == 1 and empty[0].num_rows == 0 and empty[0].schema.names == ["id"]


@pytest.fixture(scope="module")
def spark_args(spark_build, tmp_path_factory) -> list[str]:
    """CLI arguments for the Spark build; a project copy keeps featsync's manifest cache apart."""
    project = copy_project(tmp_path_factory.mktemp("spark-cli") / "project")
    return ["--project-dir", str(project), "--target", "spark"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("service", "model"), [("fraud_detection:v1", "fraud_training_set_v1"), ("fraud_detection:v2", "fraud_training_set_v2")]
)
def test_cli_training_set_from_spark_equals_duckdb(spark_args, duck_ro, tmp_path: Path, service, model):
    """`featsync training-set --target spark`: the macro compiled for Spark, read back as Arrow batches."""
    out = tmp_path / "train.parquet"
    as_of = ["--as-of", "available"] if model.endswith("v2") else []
    cli("training-set", *spark_args, "--service", service, "--spine", "stg_fraud_labels", *as_of, "--out", str(out))
    assert_training_set_equals_duckdb(out, duck_ro, model)


def write_spine_file(duck_ro, path: Path) -> Path:
    """The example's labels as a parquet spine file with UTC-aware event times."""
    labels = duck_ro.sql("select transaction_id, user_id, merchant_id, event_timestamp from stg_fraud_labels").to_arrow_table()
    pq.write_table(labels.set_column(3, "event_timestamp", labels.column(3).cast(pa.timestamp("us", tz="UTC"))), path)
    return path


def test_cli_training_set_from_spark_with_a_spine_file(spark_args, spark_session, duck_ro, tmp_path: Path):
    """A parquet spine becomes a temporary view of the session (nothing written), dropped after."""
    spine = write_spine_file(duck_ro, tmp_path / "spine.parquet")
    out = tmp_path / "train.parquet"
    cli("training-set", *spark_args, "--service", "fraud_detection:v1", "--spine", str(spine), "--out", str(out))
    assert_training_set_equals_duckdb(out, duck_ro, "fraud_training_set_v1")
    assert not [t for t in spark_session.catalog.listTables() if t.name.startswith("featsync_spine_")]


def test_cli_push_from_spark(spark_args, duck_ro, redis_url):
    """`featsync push --target spark` writes DuckDB's latest rows; a second push is incremental."""
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    # With the suites present: the push gate validates against the example's now.
    push = ["push", *spark_args, "--now", EXAMPLE_NOW, "--redis-url", redis_url, "--key-prefix", prefix, "--json"]
    try:
        stats = {s["feature_view"]: s for s in json.loads(cli(*push))}
        merchants = duck_ro.execute("select count(distinct merchant_id) from merchant_profile_features").fetchone()[0]
        current = dict(
            duck_ro.execute("select merchant_id, risk_tier from merchant_profile_features where valid_to is null").fetchall()
        )
        users = duck_ro.execute("select count(distinct user_id) from user_transaction_features").fetchone()[0]
        assert stats["user_transaction_features"]["rows_read"] == users
        assert stats["merchant_profile_features"]["rows_read"] == merchants
        # The example data ends in 2024: rows of views with a ttl have expired; the SCD2 view has none.
        assert stats["merchant_profile_features"]["keys_written"] == len(current) > 0
        for merchant in sorted(current)[:3]:
            got = json.loads(
                cli(
                    "get", *spark_args, "--redis-url", redis_url, "--key-prefix", prefix,
                    "--features", "merchant_profile_features:risk_tier", "--entity", f"merchant_id={merchant}", "--json",
                )
            )  # fmt: skip
            assert got["risk_tier"] == [current[merchant]], got
        again = {s["feature_view"]: s for s in json.loads(cli(*push))}
        assert not again["merchant_profile_features"]["full_refresh"]
        # Nothing changed in the warehouse: the incremental push finds the view unchanged and reads nothing.
        assert again["merchant_profile_features"]["rows_read"] == 0
        assert again["merchant_profile_features"]["watermark"] == stats["merchant_profile_features"]["watermark"]
    finally:
        delete_pushed_keys(Project.open(ROOT), client, prefix)


def test_push_with_jobs_slices_in_spark(spark_build, redis_url):
    """`push --jobs 3 --target spark`: each slice is read with Spark's pmod(hash(keys), 3)."""
    assert_jobs_push_what_one_job_pushes(spark_build.project, redis.Redis.from_url(redis_url), EXAMPLE_NOW)


# -- validate and the push gate ----------------------------------------------------------------

GATE_SCHEMA = "featsync_gate"


@pytest.fixture(scope="module")
def spark_gate(spark_build, tmp_path_factory) -> Iterator[tuple[Project, Any]]:
    """A project copy whose schema holds its own views of the feature views (parquet tables
    have no UPDATE: a test redefines a view with its corruption instead). Views are metadata
    only: no Spark job copies anything."""
    with connect(spark_build.project) as warehouse, pytest.MonkeyPatch.context() as mp:
        warehouse.execute(f"create schema if not exists {GATE_SCHEMA}")
        mp.setenv("FEATSYNC_SPARK_SCHEMA", GATE_SCHEMA)
        project = Project.open(copy_project(tmp_path_factory.mktemp("quality-spark") / "project"), None, "spark")
        project.registry()
        try:
            yield project, warehouse
        finally:
            warehouse.execute(f"drop schema if exists {GATE_SCHEMA} cascade")


@pytest.fixture
def spark_gate_project(spark_gate) -> Project:
    project, warehouse = spark_gate
    for view in VIEWS:
        copy_view(warehouse, view)
    return project


def copy_view(warehouse, view: str, select: str = "*") -> None:
    warehouse.execute(f"create or replace view {GATE_SCHEMA}.{view} as select {select} from {SPARK_SCHEMA}.{view}")


def test_example_suites_pass_on_spark(spark_gate_project):
    results = quality.validate(spark_gate_project, now=NOW)
    assert all(r.status == "passed" and r.engine == "spark" for r in results), "\n".join(report.report_lines(results))
    assert {r.feature_view: len(r.results) for r in results} == SUITE_SIZES
    assert by_view(results)["product_sales_features"].rows_total == 9107


def test_spark_validation_samples_whole_entities(spark_gate_project):
    """Over max_rows, validate reads every row of a hash-chosen set of entities (Spark's pmod of
    hash()) plus the newest entity; the sampled suites still pass with rescaled row counts."""
    (result,) = quality.validate(spark_gate_project, ["product_sales_features"], now=NOW, max_rows=3000)
    assert result.sampled and result.status == "passed", "\n".join(report.report_lines([result]))
    assert 0 < result.rows_validated < result.rows_total == 9107


def test_push_gate_on_spark(spark_gate, spark_gate_project, redis_url, prefix):  # noqa: F811 - pytest fixture
    _, warehouse = spark_gate
    copy_view(
        warehouse,
        "merchant_profile_features",
        "merchant_id, event_timestamp, valid_to, risk_tier,"
        " case when merchant_id = 'm0004' then 'casino' else category end as category",
    )
    code, out, err = run_cli(*push_args(spark_gate_project, redis_url, prefix, "--target", "spark", "--json"))
    assert code == CHECK_FAILED_EXIT and "not pushed: merchant_profile_features" in err
    rows = {r["feature_view"]: r for r in json.loads(out)}
    assert not rows["merchant_profile_features"]["pushed"]
    assert any("[category]" in f for f in rows["merchant_profile_features"]["failures"])
    assert "merchant_profile_features" not in online_keys(redis_url, prefix)
    assert rows["merchant_risk_features"]["pushed"]


def test_spark_state_stays_out_of_the_project(spark_build):
    """The warehouse directory and the Derby metastore live under FEATSYNC_SPARK_DIR, never in the project."""
    spark_dir = Path(os.environ["FEATSYNC_SPARK_DIR"])
    assert (spark_dir / "metastore_db").is_dir() and (spark_dir / "warehouse").is_dir()
    assert not any((ROOT / name).exists() for name in ("metastore_db", "spark-warehouse", "derby.log"))
