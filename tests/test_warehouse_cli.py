"""The CLI on every other warehouse: training sets and pushes, compared with DuckDB's results.

One parametrised set of tests per engine. Each engine's build and the CLI arguments of a
project copy on it are session fixtures of conftest (`postgres_build` / `pg_args`,
`snowflake_build` / `sf_args` on the emulator). Adding an engine is adding an ENGINES entry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

from conftest import EXAMPLE_NOW, ROOT, Build, delete_pushed_keys
from featsync.cli import main
from featsync.offline.warehouse import connect
from featsync.project import Project
from test_snowflake import arrow_rows, assert_same_rows, duckdb_rows


@dataclass(frozen=True)
class Engine:
    build_fixture: str
    args_fixture: str
    scratch_tables: Callable[[Any, Build], int]  # the spine's scratch tables left in the schema


ENGINES = {
    "postgres": Engine(
        "postgres_build",
        "pg_args",
        lambda warehouse, b: (
            warehouse.fetch_arrow(
                f"select count(*) as n from pg_tables where schemaname = '{b.schema}' and tablename like 'featsync_spine_%'"
            )
            .column("n")[0]
            .as_py()
        ),
    ),
    "snowflake": Engine(
        "snowflake_build",
        "sf_args",
        lambda warehouse, b: warehouse.fetch_arrow(f"show tables like 'FEATSYNC_SPINE_%' in schema {b.schema}").num_rows,
    ),
}


@dataclass(frozen=True)
class Target:
    name: str
    build: Build
    args: list[str]


@pytest.fixture(scope="module", params=sorted(ENGINES))
def target(request) -> Target:
    engine = ENGINES[request.param]
    return Target(request.param, request.getfixturevalue(engine.build_fixture), request.getfixturevalue(engine.args_fixture))


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout  # stderr may hold log lines (e.g. a library's warning on import)


def assert_training_set_equals_duckdb(out: Path, duck_ro, model: str) -> None:
    """The parquet training set `out` equals DuckDB's `model` table row for row, on the columns `out` has.

    Timestamps come back UTC-aware; DuckDB's table holds the same instants naive."""
    table = pq.read_table(out)
    table = pa.table(
        [c.cast(pa.timestamp("us")) if pa.types.is_timestamp(c.type) else c for c in table.columns], names=table.column_names
    )
    columns = [c for c in duckdb_rows(duck_ro, model, "transaction_id")[0] if c in table.column_names]
    _, expected = duckdb_rows(duck_ro, model, "transaction_id", columns)
    assert_same_rows(expected, arrow_rows(table, columns, "transaction_id"), f"{model} from {out.name}")


@pytest.mark.parametrize(
    ("service", "model"), [("fraud_detection:v1", "fraud_training_set_v1"), ("fraud_detection:v2", "fraud_training_set_v2")]
)
def test_cli_training_set_equals_duckdb(target, duck_ro, tmp_path: Path, service, model):
    """`featsync training-set --target X`: the macro compiled for X, read back as Arrow batches."""
    out = tmp_path / "train.parquet"
    as_of = ["--as-of", "available"] if model.endswith("v2") else []
    cli("training-set", *target.args, "--service", service, "--spine", "stg_fraud_labels", *as_of, "--out", str(out))
    assert_training_set_equals_duckdb(out, duck_ro, model)


def test_cli_training_set_with_a_spine_file(target, duck_ro, tmp_path: Path):
    """A parquet spine goes into a scratch table in the target schema (PostgreSQL: ADBC ingest;
    Snowflake: the connector's write_pandas) and is dropped after."""
    labels = duck_ro.sql("select transaction_id, user_id, merchant_id, event_timestamp from stg_fraud_labels").to_arrow_table()
    spine = tmp_path / "spine.parquet"
    pq.write_table(labels.set_column(3, "event_timestamp", labels.column(3).cast(pa.timestamp("us", tz="UTC"))), spine)
    out = tmp_path / "train.parquet"
    data = json.loads(
        cli("training-set", *target.args, "--service", "fraud_detection:v1", "--spine", str(spine), "--out", str(out), "--json")
    )
    assert data["out"] == str(out) and data["rows"] == labels.num_rows and "transaction_id" in data["columns"]
    assert_training_set_equals_duckdb(out, duck_ro, "fraud_training_set_v1")
    with connect(target.build.project) as warehouse:
        assert ENGINES[target.name].scratch_tables(warehouse, target.build) == 0


def test_cli_push_and_get(target, duck_ro, redis_url):
    """`featsync push --target X`, as the README has it: the quality gate validates every online view
    on X (against the example's now), then the latest rows are written; the online values equal
    DuckDB's. A second push is incremental and, nothing being new, validates nothing again."""
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    online = ["--redis-url", redis_url, "--key-prefix", prefix]
    assert len(list(Path(target.args[1], "expectations").glob("*.json"))) == 6  # the suites are there (one per view)
    try:
        stats = {s["feature_view"]: s for s in json.loads(cli("push", *target.args, *online, "--now", EXAMPLE_NOW, "--json"))}
        assert {s["validation"] for s in stats.values()} == {"passed"} and all(s["pushed"] for s in stats.values())
        merchants = duck_ro.execute("select count(distinct merchant_id) from merchant_profile_features").fetchone()[0]
        current = dict(
            duck_ro.execute("select merchant_id, risk_tier from merchant_profile_features where valid_to is null").fetchall()
        )
        assert stats["merchant_profile_features"]["rows_read"] == merchants
        # The example data ends in 2024: rows of views with a ttl have expired; the SCD2 view has none.
        assert stats["merchant_profile_features"]["keys_written"] == len(current) > 0
        users = duck_ro.execute("select count(distinct user_id) from user_transaction_features").fetchone()[0]
        assert stats["user_transaction_features"]["rows_read"] == users
        for merchant in sorted(current)[:3]:
            got = json.loads(
                cli(
                    "get", *target.args, *online,
                    "--features", "merchant_profile_features:risk_tier", "--entity", f"merchant_id={merchant}", "--json",
                )
            )  # fmt: skip
            assert got["risk_tier"] == [current[merchant]], got
        again = {s["feature_view"]: s for s in json.loads(cli("push", *target.args, *online, "--now", EXAMPLE_NOW, "--json"))}
        # Incremental, and nothing new: no view validated or read again, the push recorded.
        assert {s["validation"] for s in again.values()} == {"unchanged"} and all(s["pushed"] for s in again.values())
        assert not again["merchant_profile_features"]["full_refresh"] and again["merchant_profile_features"]["rows_read"] == 0
    finally:
        delete_pushed_keys(Project.open(ROOT), client, prefix)
