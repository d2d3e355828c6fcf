"""Benchmark: featsync.point_in_time_join against a hand-written DuckDB ASOF query.

    .venv/bin/python bench/pit_join.py                 # 1M spine x 1M user rows + 100k merchant rows
    .venv/bin/python bench/pit_join.py --scale 10      # 10M x 10M (+1M merchant rows)
    .venv/bin/python bench/pit_join.py --postgres      # also the LATERAL plan on PostgreSQL (smaller)

Prints, in one run: the macro (plain and availability mode) next to the hand-written
ASOF query on the same data, the ratios, that the macro's rows equal the hand-written
ones, and peak RSS (DuckDB runs in this process).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import duckdb

from featsync.project import Project
from workspace import Workspace

DAY = 86_400

GENERATE = """
create or replace table user_rows as
select (i % {users})::bigint as user_id,
       timestamp '2024-01-01' + to_seconds((i * 7919) % {span}) as event_timestamp,
       timestamp '2024-01-01' + to_seconds((i * 7919) % {span}
           + case when i % 10 = 0 then 3 * 86400 else 60 end) as created_timestamp,
       (i % 50)::bigint as txn_count,
       (i % 997) / 3.0 as amount_avg
from range({user_rows}) t(i);
create or replace table merchant_rows as
select (i % {merchants})::bigint as merchant_id,
       timestamp '2024-01-01' + to_seconds((i * 104729) % {span}) as event_timestamp,
       (i % 101) / 100.0 as chargeback_rate
from range({merchant_rows}) t(i);
create or replace table spine as
select i::bigint as spine_id, (hash(i) % {users})::bigint as user_id, (hash(i * 3) % {merchants})::bigint as merchant_id,
       timestamp '2024-01-01' + to_seconds(hash(i * 7) % {span}) as ts
from range({spine_rows}) t(i);
"""

HAND_WRITTEN = """
select s.*,
       case when u.event_timestamp >= s.ts - interval '30 days' then u.txn_count end as txn_count,
       case when u.event_timestamp >= s.ts - interval '30 days' then u.amount_avg end as amount_avg,
       case when m.event_timestamp >= s.ts - interval '7 days' then m.chargeback_rate end as chargeback_rate
from spine s
asof left join user_rows u on s.user_id = u.user_id and s.ts >= u.event_timestamp
asof left join merchant_rows m on s.merchant_id = m.merchant_id and s.ts >= m.event_timestamp
"""
FEATURES = "['bench_user_features:txn_count', 'bench_user_features:amount_avg', 'bench_merchant_features:chargeback_rate']"


def compile_macro(project: Project, as_of: str, strategy: str = "asof") -> str:
    inline = (
        f"{{{{ featsync.point_in_time_join(spine=source('bench_raw', 'spine'), features={FEATURES}, "
        f"spine_timestamp='ts', as_of='{as_of}', strategy='{strategy}') }}}}"
    )
    return project.run_dbt(["compile", "--inline", inline]).result.results[0].node.compiled_code


def timed(con, sql: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        con.execute(f"create or replace temp table bench_out as {sql}")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="1 = 1M spine x 1M user rows (default)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also time the LATERAL plan on PostgreSQL")
    args = parser.parse_args()
    n = 1_000_000 * args.scale
    sizes = dict(
        users=100_000 * args.scale,
        merchants=10_000 * args.scale,
        span=365 * DAY,
        user_rows=n,
        merchant_rows=n // 10,
        spine_rows=n,
    )

    work = Workspace.create()
    project_dir, db = work.project_dir, work.db
    try:
        start = time.perf_counter()
        with duckdb.connect(str(db)) as con:
            con.execute(GENERATE.format(**sizes))
        print(
            f"data: {n:,} spine rows, {n:,} user-feature rows, {n // 10:,} merchant-feature rows "
            f"({time.perf_counter() - start:.1f}s to generate)"
        )
        project = Project.open(project_dir, project_dir, "duckdb")
        project.run_dbt(["deps"])
        project.run_dbt(["run"])
        plain, available = compile_macro(project, "event"), compile_macro(project, "available")

        con = duckdb.connect(str(db))
        con.execute("set TimeZone = 'UTC'")
        hand = timed(con, HAND_WRITTEN, args.runs)
        macro = timed(con, plain, args.runs)
        avail = timed(con, available, args.runs)
        diff = con.execute(f"select count(*) from (({HAND_WRITTEN}) except all ({plain}))").fetchone()[0]
        diff += con.execute(f"select count(*) from (({plain}) except all ({HAND_WRITTEN}))").fetchone()[0]
        con.close()
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        print(f"{'query':<42}{'median s':>10}{'ratio':>10}")
        print(f"{'hand-written DuckDB ASOF (baseline)':<42}{hand:>10.3f}{1.0:>10.2f}")
        print(f"{'featsync macro, as_of=event':<42}{macro:>10.3f}{macro / hand:>10.2f}   target <= 1.30 x baseline")
        print(f"{'featsync macro, as_of=available':<42}{avail:>10.3f}{avail / macro:>10.2f}   x as_of=event, target <= 2.00")
        print(f"rows differing between macro and hand-written: {diff}")
        print(f"peak RSS of this process (DuckDB in-process): {peak_gb:.2f} GB")

        if args.postgres:
            bench_postgres(project_dir, db, min(n, 200_000))
    finally:
        work.remove()


def bench_postgres(project_dir: Path, db: Path, rows: int) -> None:
    """The LATERAL plan on PostgreSQL with the (key, ts) indexes, on a sample of the spine."""
    import adbc_driver_postgresql.dbapi as adbc

    with duckdb.connect(str(db)) as con:
        tables = {
            t: con.execute(f"select * from {t}" + (f" limit {rows}" if t == "spine" else "")).to_arrow_table()
            for t in ("user_rows", "merchant_rows", "spine")
        }
    pg = adbc.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True)
    cur = pg.cursor()
    cur.execute("drop schema if exists featsync_bench cascade")
    cur.execute("create schema featsync_bench")
    try:
        for name, table in tables.items():
            cur.adbc_ingest(name, table, mode="create", db_schema_name="featsync_bench")
        cur.execute("create index on featsync_bench.user_rows (user_id, event_timestamp)")
        cur.execute("create index on featsync_bench.merchant_rows (merchant_id, event_timestamp)")
        cur.execute("analyze")
        project = Project.open(project_dir, project_dir, "postgres")
        project.run_dbt(["run"])
        for as_of in ("event", "available"):
            sql = compile_macro(project, as_of, "lateral")
            start = time.perf_counter()
            cur.execute(f"select count(*) from ({sql}) j")
            cur.fetchall()
            print(
                f"PostgreSQL LATERAL, as_of={as_of}: {rows:,} spine rows x {tables['user_rows'].num_rows:,} "
                f"user rows in {time.perf_counter() - start:.2f}s"
            )
    finally:
        cur.execute("drop schema if exists featsync_bench cascade")
        pg.close()


if __name__ == "__main__":
    main()
