"""Benchmark: featsync push into a local Redis, next to a plain redis-py loop, in one run.

    .venv/bin/python bench/push.py                  # 1M entities, 5 float features
    .venv/bin/python bench/push.py --rows 10000000 --skip-baseline  # the scale case: peak RSS
    .venv/bin/python bench/push.py --cluster --rows 300000  # a local 3-master Redis Cluster
    FEATSYNC_BENCH_REDIS_URL=redis://host:port/0 ... (default redis://127.0.0.1:6379/0)

Prints rows/s of `featsync push` (dbt compile + warehouse read + encode + newest-wins
writes: SET NX while keys are absent, the Lua check-and-set otherwise), first as the
first push of the process (dbt's first in-process compile costs up to a second more),
then warm: forced through the Lua script for every row (what a push onto existing keys
costs) and as chosen per batch; and of a plain pipelined redis-py HSET + EXPIRE loop over
the same rows (no check), with Redis
memory per entity for each (INFO used_memory deltas, summed over nodes for a cluster) and
the peak RSS of this process. Every key written is deleted at the end.

--cluster starts a throwaway 3-master cluster (redis-server + redis-cli --cluster create,
as tests/test_cluster.py does) on free loopback ports and pushes through redis+cluster://.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import redis

from featsync.online.connections import redis_client
from featsync.online.push import Pusher
from featsync.project import Project
from workspace import Workspace

VIEW = "bench_entity_features"


def nodes(client: redis.Redis) -> list[redis.Redis]:
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def used_memory(client: redis.Redis) -> int:
    return sum(int(node.info("memory")["used_memory"]) for node in nodes(client))


def clear(client: redis.Redis, pattern: str) -> None:
    """UNLINK every key matching pattern, one UNLINK per key (cluster nodes refuse cross-slot ones)."""
    for node in nodes(client):
        pipe = node.pipeline(transaction=False)
        for i, key in enumerate(node.scan_iter(match=pattern, count=10_000), 1):
            pipe.unlink(key)
            if i % 10_000 == 0:
                pipe.execute()
        pipe.execute()


def free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port + 10000 < 65536:
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


@contextmanager
def local_cluster() -> Iterator[str]:
    """A 3-master Redis Cluster on loopback, torn down afterwards; yields its URL."""
    workdir = tempfile.mkdtemp(prefix="featsync-cluster-")
    ports = [free_port() for _ in range(3)]
    procs = []
    try:
        for port in ports:
            args = ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--save", ""]
            args += ["--cluster-config-file", f"nodes-{port}.conf", "--appendonly", "no", "--dir", workdir]
            procs.append(subprocess.Popen([shutil.which("redis-server"), *args], stdout=subprocess.DEVNULL))
        for port in ports:
            for _ in range(100):
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0"]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        while not all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in ports):
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def timed_push(project: Project, client: redis.Redis, set_nx: bool) -> tuple[float, float]:
    """(seconds, Redis bytes per entity) of one full push of the bench view into empty keys."""
    pusher = Pusher(project, client, key_prefix="bench", set_nx=set_nx)
    for pattern in pusher.key_patterns([VIEW]):
        clear(client, pattern)
    base = used_memory(client)
    start = time.perf_counter()
    (stats,) = pusher.push([VIEW])
    seconds = time.perf_counter() - start
    per_entity = (used_memory(client) - base) / stats.keys_written
    for pattern in pusher.key_patterns([VIEW]):
        clear(client, pattern)
    return seconds, per_entity


def plain_loop(client: redis.Redis, rows: list[tuple]) -> tuple[float, float]:
    """The baseline: one hash per entity, pipelined HSET + EXPIRE, 1,000 rows per round trip."""
    clear(client, "featsync:bench-plain:*")
    base = used_memory(client)
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, (entity, ts, f1, f2, f3, f4, f5) in enumerate(rows, 1):
        key = f"featsync:bench-plain:{entity}"
        pipe.hset(key, mapping={"ts": ts, "f1": f1, "f2": f2, "f3": f3, "f4": f4, "f5": f5})
        pipe.expire(key, 86_400 * 365)
        if i % 1000 == 0:
            pipe.execute()
    pipe.execute()
    seconds = time.perf_counter() - start
    per_entity = (used_memory(client) - base) / len(rows)
    clear(client, "featsync:bench-plain:*")
    return seconds, per_entity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-baseline", action="store_true", help="only featsync push (for the 10M scale run)")
    parser.add_argument("--cluster", action="store_true", help="push into a local 3-master Redis Cluster")
    args = parser.parse_args()
    work = Workspace.create()
    try:
        project = work.entity_project(args.rows)
        with local_cluster() if args.cluster else _nothing() as cluster_url:
            url = cluster_url or os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
            client = redis_client(project, url)
            run(project, client, url, work, args)
    finally:
        work.remove()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def run(project: Project, client: redis.Redis, url: str, work: Workspace, args: argparse.Namespace) -> None:
    n = args.rows
    cold_s, cold_bytes = timed_push(project, client, set_nx=True)  # pays dbt's first in-process compile
    push_peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"{n:,} entities, 5 float features, no ttl, Redis at {url} (shares the machine)")
    if args.skip_baseline:
        print(
            f"featsync push: {n / cold_s:,.0f} rows/s, {cold_bytes:.0f} bytes/entity in Redis, "
            f"{cold_s:.1f} s, peak RSS {push_peak_gb:.2f} GB"
        )
        return
    script_s, script_bytes = timed_push(project, client, set_nx=False)
    warm_s, warm_bytes = timed_push(project, client, set_nx=True)
    with duckdb.connect(str(work.db), read_only=True) as con:
        rows = con.execute("select entity_id, epoch_us(event_timestamp), f1, f2, f3, f4, f5 from entity_rows").fetchall()
    plain_s, plain_bytes = plain_loop(client, rows)
    print(f"{'writer':<64}{'rows/s':>10}{'bytes/entity':>14}")
    print(f"{'plain redis-py pipeline HSET+EXPIRE (baseline, no check)':<64}{n / plain_s:>10,.0f}{plain_bytes:>14.0f}")
    for label, seconds, per_entity in (
        ("featsync push, first in this process (SET NX, cold dbt)", cold_s, cold_bytes),
        ("featsync push, Lua check-and-set for every row", script_s, script_bytes),
        ("featsync push (SET NX while keys are absent, else Lua)", warm_s, warm_bytes),
    ):
        print(f"{label:<64}{n / seconds:>10,.0f}{per_entity:>14.0f}   {plain_s / seconds:.2f} x baseline")
    print(f"peak RSS during the first featsync push: {push_peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
