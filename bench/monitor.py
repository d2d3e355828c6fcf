"""Benchmark: featsync drift, status and verify, each beside a baseline from the same run.

    .venv/bin/python bench/monitor.py                 # 1M entities, 5 float features
    .venv/bin/python bench/monitor.py --rows 200000

Starts a private redis-server (no persistence) on a free loopback port, pushes the
entities into it, then measures:
- drift over two 14-day windows of all the rows, against just reading the same columns
  of the two windows out of DuckDB as Arrow (what drift cannot avoid);
- status's online key count (one SCAN of the keyspace, keys bucketed per view), against
  a bare SCAN loop that only counts, and DBSIZE (O(1), but counts every key of the db);
- verify --sample 10000 (latest rows recomputed by push's SQL, sampled, read online,
  compared), against what a push reads (the compiled latest rows, every row) and a
  bare MGET of the same 10,000 keys.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

import duckdb
import redis

from featsync.monitoring import drift
from featsync.monitoring import status as mstatus
from featsync.monitoring import verify as monitor_verify
from featsync.offline.warehouse import connect
from featsync.online.push import Pusher, compile_latest_rows
from featsync.project import Project
from workspace import Workspace, private_redis

WINDOWS = ("2026-01-01T00:00:00Z..2026-01-15T00:00:00Z", "2026-01-15T00:00:00Z..2026-01-29T00:00:00Z")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000)
    args = parser.parse_args()
    stack = ExitStack()
    work = Workspace.create()
    try:
        url = stack.enter_context(private_redis())
        client = redis.Redis.from_url(url)
        port = client.connection_pool.connection_kwargs["port"]
        with duckdb.connect(str(work.db)) as con:
            for table in ("user_rows", "merchant_rows", "spine"):
                con.execute(f"create table {table} (x int)")
            con.execute(f"""create table entity_rows as
                select i::bigint as entity_id,
                       timestamp '2026-01-01' + to_seconds(i * (28 * 86400) // {args.rows}) as event_timestamp,
                       i / 3.0 as f1, i / 7.0 as f2, (i % 1000)::double as f3, sqrt(i) as f4, -i / 11.0 as f5
                from range({args.rows}) t(i)""")
        project = Project.open(work.project_dir, work.project_dir, "duckdb")
        project.run_dbt(["deps"])
        project.run_dbt(["run", "--select", "bench_entity_features"])
        view = "bench_entity_features"
        Pusher(project, client, key_prefix="bench").push([view])
        n = args.rows
        print(f"{n:,} entities of 5 float features; private Redis {client.info('server')['redis_version']} on :{port}")
        print(f"{'step':<62}{'seconds':>9}")

        import_s, _ = timed(lambda: __import__("scipy.stats"))  # paid once per featsync drift process
        print(f"{'import scipy.stats (once per process, not in the figures below)':<62}{import_s:>9.2f}")
        reference, current = (drift.Window.parse(w) for w in WINDOWS)
        read_s, _ = timed(lambda: _read_windows(project, view, reference, current))
        drift_s, report = timed(lambda: drift.drift(project, view, reference, current))
        assert report.reference_rows + report.current_rows == n
        print(f"{'baseline: read both windows (5 columns) as Arrow':<62}{read_s:>9.2f}")
        print(f"{'featsync drift (counts in SQL, read, KS + PSI per feature)':<62}{drift_s:>9.2f}   {drift_s / read_s:.2f} x")

        registry = project.registry()
        layout = Pusher(project, client, key_prefix="bench").layout(registry.feature_view(view))
        dbsize_s, size = timed(client.dbsize)
        bare_s, bare = timed(lambda: sum(1 for _ in client.scan_iter(match=f"{layout.state_key}*", count=mstatus.SCAN_COUNT)))
        count_s, counts = timed(lambda: mstatus.count_online_keys(client, [layout]))
        assert counts[layout.prefix] == n and bare == n + 1 and size == n + 1  # + the state hash
        status_s, (status,) = timed(lambda: mstatus.status(project, client, "bench", [view]))
        assert status.online_keys == n and not status.breaches, status
        print(f"{'baseline: DBSIZE':<62}{dbsize_s:>9.4f}")
        print(f"{'baseline: bare SCAN loop counting the keys':<62}{bare_s:>9.2f}")
        print(f"{'status key count (SCAN, bucketed per view)':<62}{count_s:>9.2f}   {count_s / bare_s:.2f} x bare SCAN")
        print(f"{'featsync status, whole (dbt compile + latest rows SQL + SCAN)':<62}{status_s:>9.2f}")

        keys = [layout.key([i]) for i in range(0, n, max(n // args.sample, 1))][: args.sample]
        mget_s, values = timed(lambda: client.mget(keys))
        assert all(v is not None for v in values)
        latest_s, latest = timed(lambda: _latest_rows(project, view))
        assert latest == n
        print(f"{'baseline: push read: compile latest_rows, read every row':<62}{latest_s:>9.2f}")
        verify_s, (result,) = timed(lambda: monitor_verify.verify(project, client, "bench", [view], sample=args.sample))
        assert result.sampled == args.sample and result.mismatches == 0, result.checks
        print(f"{f'baseline: bare MGET of {args.sample:,} keys':<62}{mget_s:>9.2f}")
        label = f"featsync verify --sample {args.sample:,} (0 mismatches)"
        print(f"{label:<62}{verify_s:>9.2f}   {verify_s / latest_s:.2f} x push read")
    finally:
        stack.close()
        work.remove()


def _latest_rows(project: Project, view_name: str) -> int:
    sql = compile_latest_rows(project, [view_name])[view_name]
    with connect(project) as warehouse:
        return sum(batch.num_rows for batch in warehouse.arrow_batches(sql))


def _read_windows(project: Project, view_name: str, *windows: drift.Window) -> int:
    view = project.registry().feature_view(view_name)
    rows = 0
    with connect(project) as warehouse:
        for window in windows:
            params: list = []
            sql = f"select f1, f2, f3, f4, f5 from {view.relation} where {window.sql(view.timestamp, warehouse, params)}"
            rows += warehouse.fetch_arrow(sql, params).num_rows
    return rows


if __name__ == "__main__":
    main()
