"""Benchmark: featsync push into a local Redis, next to a plain redis-py loop, in one run.

    .venv/bin/python bench/push.py                  # 1M entities, 5 float features
    .venv/bin/python bench/push.py --rows 10000000  # the scale case: watch peak RSS
    FEATSYNC_BENCH_REDIS_URL=redis://host:port/0 ... (default redis://127.0.0.1:6379/0)

Prints rows/s of `featsync push` (warehouse read + encode + Lua stale-checked writes) and
of a plain pipelined HSET + EXPIRE loop over the same rows (no stale check), Redis memory
per entity for each, and the peak RSS of this process. Keys live under featsync:bench*
and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import duckdb
import redis

from featsync.project import Project
from featsync.push import Pusher
from workspace import Workspace


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def clear(client: redis.Redis, pattern: str) -> None:
    batch = []
    for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-baseline", action="store_true", help="only featsync push (for the 10M scale run)")
    args = parser.parse_args()
    url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    work = Workspace.create()
    project_dir, db = work.project_dir, work.db
    try:
        with duckdb.connect(str(db)) as con:
            for table in ("user_rows", "merchant_rows", "spine"):
                con.execute(f"create table {table} (x int)")
            con.execute(f"""create table entity_rows as
                select i::bigint as entity_id, timestamp '2026-01-01' + to_seconds(i % 86400) as event_timestamp,
                       i / 3.0 as f1, i / 7.0 as f2, (i % 1000)::double as f3, sqrt(i) as f4, -i / 11.0 as f5
                from range({args.rows}) t(i)""")
        project = Project.open(project_dir, project_dir, "duckdb")
        project.run_dbt(["deps"])
        project.run_dbt(["run", "--select", "bench_entity_features"])
        project.registry()

        clear(client, "featsync:bench*")
        base_memory = used_memory(client)
        pusher = Pusher(project, client, key_prefix="bench")
        start = time.perf_counter()
        (stats,) = pusher.push(["bench_entity_features"])
        featsync_s = time.perf_counter() - start
        featsync_bytes = (used_memory(client) - base_memory) / stats.keys_written
        assert stats.keys_written == args.rows, stats

        push_peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        n = args.rows
        if args.skip_baseline:
            print(f"{n:,} entities, 5 float features, Redis at {url} (shares the machine)")
            print(
                f"featsync push: {n / featsync_s:,.0f} rows/s, {featsync_bytes:.0f} bytes/entity in Redis, "
                f"{featsync_s:.1f} s, peak RSS {push_peak_gb:.2f} GB"
            )
            return
        # Baseline: the same rows through a plain redis-py pipeline, one hash per entity.
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("select entity_id, epoch_us(event_timestamp), f1, f2, f3, f4, f5 from entity_rows").fetchall()
        clear(client, "featsync:bench*")
        base_memory = used_memory(client)
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i, (entity, ts, f1, f2, f3, f4, f5) in enumerate(rows, 1):
            key = f"featsync:bench-plain:{entity}"
            pipe.hset(key, mapping={"ts": ts, "f1": f1, "f2": f2, "f3": f3, "f4": f4, "f5": f5})
            pipe.expire(key, 86_400 * 365)
            if i % 1000 == 0:
                pipe.execute()
        pipe.execute()
        plain_s = time.perf_counter() - start
        plain_bytes = (used_memory(client) - base_memory) / len(rows)
        del rows
        print(f"{n:,} entities, 5 float features, Redis at {url} (shares the machine)")
        print(f"{'writer':<58}{'rows/s':>10}{'bytes/entity':>14}")
        print(f"{'plain redis-py pipeline HSET+EXPIRE (baseline, no check)':<58}{n / plain_s:>10,.0f}{plain_bytes:>14.0f}")
        print(
            f"{'featsync push (warehouse read + encode + stale check)':<58}{n / featsync_s:>10,.0f}"
            f"{featsync_bytes:>14.0f}   {plain_s / featsync_s:.2f} x baseline"
        )
        print(f"peak RSS during featsync push: {push_peak_gb:.2f} GB")
    finally:
        clear(client, "featsync:bench*")
        work.remove()


if __name__ == "__main__":
    main()
