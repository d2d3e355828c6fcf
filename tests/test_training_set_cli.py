"""The ad-hoc training-set paths (CLI and FeatureStore) run the same macro as the models.

The property cases of test_point_in_time go through `featsync training-set` end to end:
a CSV spine with UTC timestamps, dbt compiling the macro, the warehouse joining, parquet out.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings

from featsync.cli import main
from featsync.errors import FeatsyncError
from featsync.store import FeatureStore
from test_point_in_time import oracle, pair_rows, profile_rows, spines, user_rows

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ["fv_user:amount", "fv_user:label", "fv_pair:score", "fv_profile:tier"]


@pytest.fixture(scope="module")
def pit_dir(pit_duckdb) -> Path:
    """The pit project on DuckDB (conftest); tables are refilled per example."""
    return pit_duckdb.project_dir


def load(rows: dict[str, list[tuple]]) -> None:
    # A short-lived connection: featsync and dbt open the same file in this process.
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        for table, values in rows.items():
            con.execute(f"delete from {table}")
            if values:
                con.executemany(f"insert into {table} values ({', '.join('?' * len(values[0]))})", values)


def spine_csv(path: Path, spine: list[tuple]) -> None:
    table = pa.table(
        {
            "spine_id": pa.array([r[0] for r in spine], pa.int64()),
            "user_id": pa.array([r[1] for r in spine], pa.string()),
            "shop_id": pa.array([r[2] for r in spine], pa.string()),
            "ts": pa.array([None if r[3] is None else r[3].replace(tzinfo=UTC) for r in spine], pa.timestamp("us", tz="UTC")),
        }
    )
    pacsv.write_csv(table, path)


# Each example runs the whole CLI (about 3 s), so: few examples and no shrinking.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spine=spines, user=user_rows, pair=pair_rows, profile=profile_rows)
@pytest.mark.parametrize("as_of", ["event", "available"])
def test_cli_matches_oracle(pit_dir, tmp_path, as_of, spine, user, pair, profile):
    rows = {"user_rows": user, "pair_rows": pair, "profile_rows": profile}
    load(rows)
    spine_csv(tmp_path / "spine.csv", spine)
    out = tmp_path / "out.parquet"
    args = [
        "training-set",
        "--project-dir",
        str(pit_dir),
        "--target",
        "duckdb",
        "--spine",
        str(tmp_path / "spine.csv"),
        "--spine-timestamp",
        "ts",
        "--join-key-map",
        "merchant_id=shop_id",
        "--as-of",
        as_of,
        "--out",
        str(out),
    ]
    for feature in FEATURES:
        args += ["--features", feature]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    got = Counter(zip(*(table.column(c).to_pylist() for c in ("spine_id", "amount", "label", "score", "tier")), strict=True))
    assert got == oracle(spine, rows, as_of)


def test_feature_store_with_pandas(pit_dir):
    load(
        {
            "user_rows": [("a", pd.Timestamp("2024-01-01 01:00").to_pydatetime(), None, 7, "x")],
            "pair_rows": [],
            "profile_rows": [],
        }
    )
    store = FeatureStore(pit_dir, target="duckdb")
    entity_df = pd.DataFrame(
        {
            "user_id": ["a", "a", None],
            "shop_id": ["m1", "m1", "m1"],
            # 03:00+02:00 is 01:00 UTC: zones are converted, not dropped.
            "ts": pd.to_datetime(["2024-01-01T03:00:00+02:00", "2024-01-01T00:59:59Z", "2024-01-01T05:00:00Z"], utc=True),
        }
    )
    table = store.get_historical_features(
        entity_df,
        features=["fv_user:amount"],
        spine_timestamp="ts",
        full_feature_names=True,
    )
    df = table.to_pandas().sort_values("ts")
    assert list(df.columns) == ["user_id", "shop_id", "ts", "fv_user__amount"]
    # 00:59:59Z is before the row; 03:00+02:00 is exactly its time; a NULL key matches nothing.
    assert df["fv_user__amount"].isna().tolist() == [True, False, True]
    assert df["fv_user__amount"].iloc[1] == 7
    assert str(df["ts"].dt.tz) == "UTC"


def test_bad_spines_are_rejected(pit_dir, tmp_path):
    store = FeatureStore(pit_dir, target="duckdb")
    naive = pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2024-01-01 01:00"])})
    with pytest.raises(FeatsyncError, match="spine column 'ts' holds naive timestamps"):
        store.get_historical_features(naive, features=["fv_user:amount"], spine_timestamp="ts")
    with pytest.raises(FeatsyncError, match="the spine has no column 'event_timestamp'"):
        store.get_historical_features(naive, features=["fv_user:amount"])
    aware = naive.assign(ts=naive["ts"].dt.tz_localize("UTC"))
    with pytest.raises(FeatsyncError, match="feature view 'fv_user' has no feature 'nope'"):
        store.get_historical_features(aware, features=["fv_user:nope"], spine_timestamp="ts")
    with pytest.raises(FeatsyncError, match="exactly one of features or a feature service"):
        store.get_historical_features(naive, spine_timestamp="ts")
    result = adhoc(pit_dir, tmp_path / "missing.csv", tmp_path / "o.parquet")
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "naive.csv").write_text("user_id,ts\na,2024-01-01 01:00:00\n")
    result = adhoc(pit_dir, tmp_path / "naive.csv", tmp_path / "o.parquet", "--spine-timestamp", "ts")
    assert result.exit_code == 1, result.output
    assert f"spine {tmp_path / 'naive.csv'}, column 'ts', row 1: '2024-01-01 01:00:00' has no time zone" in result.output


def test_csv_spine_times_follow_the_one_rule_for_text_times(pit_dir, tmp_path):
    """RFC 3339 as every other text time: any fraction digits (floored to the µs), lower-case
    t and z, a space; the first bad value is named with its row and why."""
    load({"user_rows": [("a", datetime(2024, 1, 1, 1), None, 7, "x")], "pair_rows": [], "profile_rows": []})
    spine = tmp_path / "s.csv"
    spine.write_text(
        "user_id,ts\na,2024-01-01T00:59:59.9999999Z\na,2024-01-01t01:00:00z\na,2024-01-01 03:00:00.000000001+02:00\na,\n"
    )
    out = tmp_path / "o.parquet"
    result = adhoc(pit_dir, spine, out, "--spine-timestamp", "ts")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert Counter(zip(table.column("ts").to_pylist(), table.column("amount").to_pylist(), strict=True)) == Counter(
        {
            (datetime(2024, 1, 1, 0, 59, 59, 999999, tzinfo=UTC), None): 1,
            (datetime(2024, 1, 1, 1, tzinfo=UTC), 7): 2,
            (None, None): 1,
        }
    )
    spine.write_text("user_id,ts\na,2024-01-01T01:00:00Z\na,2024-01-01T23:59:60Z\n")
    result = adhoc(pit_dir, spine, out, "--spine-timestamp", "ts")
    assert (
        result.exit_code == 1 and f"spine {spine}, column 'ts', row 2: '2024-01-01T23:59:60Z' is a leap second" in result.output
    )


def test_spine_errors_are_one_line_each(pit_dir, tmp_path):
    """Each broken spine is a clear error through `featsync training-set` (exit 1, no traceback)."""
    out = tmp_path / "o.parquet"

    def run(name: str, table: pa.Table | str, *extra: str):
        path = tmp_path / name
        if isinstance(table, str):
            path.write_text(table)
        elif name.endswith(".csv"):
            pacsv.write_csv(table, path)
        else:
            pq.write_table(table, path)
        result = adhoc(pit_dir, path, out, "--spine-timestamp", "ts", *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        return " ".join(result.output.split())

    ts = pa.array([1_704_067_200_000_000], pa.timestamp("us", tz="UTC"))
    assert "the spine has no column 'user_id' for entity 'user_id' of feature view 'fv_user' (columns: uid, ts)" in run(
        "nokey.parquet", pa.table({"uid": ["a"], "ts": ts})
    )
    assert "spine column 'user_id' is int64, but entity 'user_id' of feature view 'fv_user' is text" in run(
        "intkey.parquet", pa.table({"user_id": [1], "ts": ts})
    )
    assert "cannot read spine" in run("corrupt.parquet", "PAR1 this is not parquet") and "not a readable parquet file" in (
        run("corrupt.parquet", "PAR1 this is not parquet")
    )
    assert "the spine has a column 'amount', the name of feature 'fv_user:amount' in the training set" in run(
        "clash.parquet", pa.table({"user_id": ["a"], "ts": ts, "amount": [1]})
    )
    # A mapped key no requested view joins on is a typo, not a silently ignored option (the macro's check).
    assert "join_key_map names 'merchant_id', which is not an entity of the requested feature views (entities: user_id)" in run(
        "mapped.parquet", pa.table({"user_id": ["a"], "ts": ts}), "--join-key-map", "merchant_id=shop_id"
    )
    # A spine column in featsync's own namespace would be taken for the join's helper column.
    assert "the spine has a column 'featsync_spine_ts'; names starting with 'featsync_' are reserved" in run(
        "own.parquet", pa.table({"user_id": ["a"], "ts": ts, "featsync_spine_ts": ts})
    )
    # A column held twice (CSV header or parquet schema) is named, not a KeyError traceback.
    assert "spine column 'user_id' appears twice" in run("twice.csv", "user_id,user_id,ts\na,a,2024-01-01T00:00:00Z\n")
    assert "spine column 'user_id' appears twice" in run(
        "twice.parquet", pa.table([["a"], ["a"], ts], ["user_id", "user_id", "ts"])
    )
    assert "the spine timestamp 'ts;drop' is not a plain column name" in " ".join(
        adhoc(pit_dir, tmp_path / "clash.parquet", out, "--spine-timestamp", "ts;drop").output.split()
    )
    # Full feature names make the clash go away.
    result = adhoc(pit_dir, tmp_path / "clash.parquet", out, "--spine-timestamp", "ts", "--full-feature-names")
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column_names == ["user_id", "ts", "amount", "fv_user__amount"]


def test_header_only_csv_gives_an_empty_training_set(pit_dir, tmp_path):
    (tmp_path / "empty.csv").write_text("spine_id,user_id,shop_id,ts\n")
    out = tmp_path / "o.parquet"
    result = CliRunner().invoke(
        main,
        ["training-set", "--project-dir", str(pit_dir), "--target", "duckdb", "--spine", str(tmp_path / "empty.csv"),
         "--spine-timestamp", "ts", "--join-key-map", "merchant_id=shop_id", "--out", str(out),
         *(a for f in FEATURES for a in ("--features", f))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.column_names == ["spine_id", "user_id", "shop_id", "ts", "amount", "label", "score", "tier"]
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_a_join_key_mapped_twice_is_a_usage_error(pit_dir, tmp_path):
    (tmp_path / "s.csv").write_text("user_id,ts\na,2024-01-01T00:00:00Z\n")
    result = adhoc(pit_dir, tmp_path / "s.csv", tmp_path / "o.parquet", "--spine-timestamp", "ts",
                   "--join-key-map", "user_id=a", "--join-key-map", "user_id=b")  # fmt: skip
    assert result.exit_code == 64 and "join key 'user_id' is mapped twice" in result.output, result.output


def adhoc(pit_dir: Path, spine: Path, out: Path, *extra: str):
    """`featsync training-set` for fv_user:amount on the pit project."""
    args = ["training-set", "--project-dir", str(pit_dir), "--target", "duckdb", "--features", "fv_user:amount"]
    return CliRunner().invoke(main, [*args, "--spine", str(spine), "--out", str(out), *extra])


def test_training_set_from_a_model_relation(duckdb_build):
    """The shipped project: the CLI over the labels model equals the fraud_training_set_v1 table."""
    out = Path(os.environ["FEATSYNC_DUCKDB_PATH"]).with_name("adhoc.parquet")
    result = CliRunner().invoke(
        main,
        [
            "training-set",
            "--project-dir",
            str(ROOT),
            "--target",
            "dev",
            "--service",
            "fraud_detection:v1",
            "--spine",
            "stg_fraud_labels",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    adhoc = pq.read_table(out).to_pandas()
    with duckdb.connect(os.environ["FEATSYNC_DUCKDB_PATH"], read_only=True) as con:
        model = con.execute("select * from fraud_training_set_v1").fetch_df()
    key = ["transaction_id"]
    adhoc = adhoc.sort_values(key).reset_index(drop=True)
    model = model.sort_values(key).reset_index(drop=True)
    model["event_timestamp"] = model["event_timestamp"].dt.tz_localize("UTC")
    pd.testing.assert_frame_equal(adhoc, model, check_dtype=False)


def test_feature_name_collisions_name_both_views(pit_dir):
    store = FeatureStore(pit_dir, target="duckdb")
    load(
        {
            "user_rows": [("a", pd.Timestamp("2024-01-01 01:00").to_pydatetime(), None, 7, "x")],
            "pair_rows": [],
            "profile_rows": [],
        }
    )
    spine = pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2024-01-01T02:00:00Z"])})
    with pytest.raises(FeatsyncError, match="'amount' is provided by both feature views 'fv_user' and 'fv_user_copy'"):
        store.get_historical_features(spine, features=["fv_user:amount", "fv_user_copy:amount"], spine_timestamp="ts")
    table = store.get_historical_features(
        spine, features=["fv_user:amount", "fv_user_copy:amount"], spine_timestamp="ts", full_feature_names=True
    )
    assert table.select(["fv_user__amount", "fv_user_copy__amount"]).to_pylist() == [
        {"fv_user__amount": 7, "fv_user_copy__amount": 7}
    ]


def test_historical_features_as_feast_returns_them(pit_dir, tmp_path):
    """A RetrievalJob (to_df, to_arrow) from pandas, Arrow, a file or a SQL query, as in Feast;
    the table's own methods still answer, so code written for the Arrow table keeps working."""
    load(
        {
            "user_rows": [("a", pd.Timestamp("2024-01-01 01:00").to_pydatetime(), None, 7, "x")],
            "pair_rows": [],
            "profile_rows": [],
        }
    )
    store = FeatureStore(pit_dir, target="duckdb")
    spine = pd.DataFrame({"user_id": ["a", "b"], "event_timestamp": pd.to_datetime(["2024-01-01T02:00:00Z"] * 2)})
    spine.to_parquet(tmp_path / "spine.parquet")
    query = (  # a query's naive timestamps mean UTC
        "select * from (values ('a', timestamp '2024-01-01 02:00:00'), ('b', timestamp '2024-01-01 02:00:00'))"
        " t(user_id, event_timestamp)"
    )
    for entity_df in (spine, pa.Table.from_pandas(spine), tmp_path / "spine.parquet", str(tmp_path / "spine.parquet"), query):
        job = store.get_historical_features(entity_df=entity_df, features=["fv_user:amount", "fv_user:label"])
        assert sorted(job.to_arrow().select(["user_id", "amount"]).to_pylist(), key=lambda r: r["user_id"]) == [
            {"user_id": "a", "amount": 7},
            {"user_id": "b", "amount": None},
        ], entity_df
        df = job.to_df().sort_values("user_id")
        assert df["label"].tolist()[0] == "x" and str(df["event_timestamp"].dt.tz) == "UTC"
        assert job.num_rows == 2 and job.to_pandas().shape == df.shape  # the Arrow table's own API
    with pytest.raises(FeatsyncError, match="cannot run the entity_df query"):
        store.get_historical_features("select * from no_such_table", features=["fv_user:amount"])


def test_name_collisions_exit_as_docs_cli_says(pit_dir, tmp_path):
    """docs/cli.md: a spine column named like an output feature is a bad spine (1); two requested
    features of one name are refused by the macro, the one place that names outputs (3, dbt compile)."""
    (tmp_path / "clash.csv").write_text("user_id,ts,amount\na,2024-01-01T02:00:00Z,1\n")
    (tmp_path / "plain.csv").write_text("user_id,ts\na,2024-01-01T02:00:00Z\n")
    out = tmp_path / "o.parquet"
    clash = adhoc(pit_dir, tmp_path / "clash.csv", out, "--spine-timestamp", "ts")
    assert clash.exit_code == 1 and "the spine has a column 'amount'" in clash.output, clash.output
    both = adhoc(pit_dir, tmp_path / "plain.csv", out, "--spine-timestamp", "ts", "--features", "fv_user_copy:amount")
    assert both.exit_code == 3 and "is provided by both feature views 'fv_user' and 'fv_user_copy'" in both.output
    docs = " ".join((Path(__file__).resolve().parent.parent / "docs/cli.md").read_text().split())
    assert "Exit codes 0, 1 (a bad spine, among them a column named like an output feature), 2 (unknown features), " in docs
