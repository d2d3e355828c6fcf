"""The CLI on the postgres target: training sets and pushes out of PostgreSQL as Arrow batches.

The example is the one the `postgres_build` fixture built; results are compared with DuckDB's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from conftest import EXAMPLE_NOW, ROOT, copy_project, delete_pushed_keys
from featsync.cli import main
from featsync.offline.warehouse import PostgresWarehouse, connect
from featsync.project import Project
from test_snowflake import assert_training_set_equals_duckdb, write_spine_file


@pytest.fixture(scope="module")
def pg_args(postgres_build, tmp_path_factory) -> list[str]:
    """CLI arguments for the built schema. A copy of the project: featsync's manifest cache lives
    in the project and names the relations of the schema it was parsed for (a per-run schema here)."""
    project = copy_project(tmp_path_factory.mktemp("pg-cli") / "project")
    return ["--project-dir", str(project), "--target", "postgres"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("service", "model"), [("fraud_detection:v1", "fraud_training_set_v1"), ("fraud_detection:v2", "fraud_training_set_v2")]
)
def test_cli_training_set_from_postgres_equals_duckdb(pg_args, duck_ro, tmp_path: Path, service, model):
    out = tmp_path / "train.parquet"
    as_of = ["--as-of", "available"] if model.endswith("v2") else []
    cli("training-set", *pg_args, "--service", service, "--spine", "stg_fraud_labels", *as_of, "--out", str(out))
    assert_training_set_equals_duckdb(out, duck_ro, model)


def test_cli_training_set_from_postgres_with_a_spine_file(pg_args, postgres_build, duck_ro, tmp_path: Path):
    """A parquet spine goes into a scratch table in the Postgres schema (ADBC ingest) and is dropped after."""
    spine = write_spine_file(duck_ro, tmp_path / "spine.parquet")
    out = tmp_path / "train.parquet"
    cli("training-set", *pg_args, "--service", "fraud_detection:v1", "--spine", str(spine), "--out", str(out))
    assert_training_set_equals_duckdb(out, duck_ro, "fraud_training_set_v1")
    with connect(postgres_build.project) as warehouse:
        scratch = warehouse.fetch_arrow(
            "select count(*) as n from pg_tables"
            f" where schemaname = '{postgres_build.schema}' and tablename like 'featsync_spine_%'"
        )
    assert scratch.column("n").to_pylist() == [0]


def test_cli_push_from_postgres(pg_args, duck_ro, redis_url):
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    # With the suites present, as the README's push: the gate validates against the example's now.
    push = ["push", *pg_args, "--now", EXAMPLE_NOW, "--redis-url", redis_url, "--key-prefix", prefix, "--json"]
    try:
        stats = {s["feature_view"]: s for s in json.loads(cli(*push))}
        merchants = duck_ro.execute("select count(distinct merchant_id) from merchant_profile_features").fetchone()[0]
        current = dict(
            duck_ro.execute("select merchant_id, risk_tier from merchant_profile_features where valid_to is null").fetchall()
        )
        assert stats["merchant_profile_features"]["rows_read"] == merchants
        # The example data ends in 2024: rows of views with a ttl have expired; the SCD2 view has none.
        assert stats["merchant_profile_features"]["keys_written"] == len(current) > 0
        merchant = sorted(current)[0]
        got = json.loads(
            cli(
                "get", *pg_args, "--redis-url", redis_url, "--key-prefix", prefix,
                "--features", "merchant_profile_features:risk_tier", "--entity", f"merchant_id={merchant}", "--json",
            )
        )  # fmt: skip
        assert got["risk_tier"] == [current[merchant]]
        again = {s["feature_view"]: s for s in json.loads(cli(*push))}
        # Incremental: only rows at or after the watermark are read again.
        assert not again["merchant_profile_features"]["full_refresh"]
        assert 0 < again["merchant_profile_features"]["rows_read"] < stats["merchant_profile_features"]["rows_read"]
    finally:
        delete_pushed_keys(Project.open(ROOT), client, prefix)


def test_postgres_rows_come_out_in_bounded_arrow_batches(postgres_build):
    """ADBC streams COPY in batches of about `batch_bytes`; featsync re-slices them to at most `batch_rows`."""
    sql = "select g as id, g * 1.5 as x, md5(g::text) as s from generate_series(1, 200000) g"
    with connect(postgres_build.project) as warehouse:
        assert isinstance(warehouse, PostgresWarehouse)
        warehouse.batch_bytes = 1 << 20
        sizes = [(b.num_rows, b.nbytes) for b in warehouse.arrow_batches(sql, batch_rows=10_000)]
    assert sum(n for n, _ in sizes) == 200_000
    assert max(n for n, _ in sizes) <= 10_000 and len(sizes) >= 20
    assert max(nbytes for _, nbytes in sizes) < 2 << 20
