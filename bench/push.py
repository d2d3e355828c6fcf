"""Benchmark: featsync push into a local Redis, next to a plain redis-py loop, in one run.

    .venv/bin/python bench/push.py                  # 1M entities, 5 float features
    .venv/bin/python bench/push.py --rows 10000000 --skip-baseline  # the scale case: peak RSS
    .venv/bin/python bench/push.py --cluster --rows 200000  # a 3-master Redis Cluster vs one Redis
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
as tests/test_cluster.py does) and one plain redis-server with the same settings, on
loopback ports 7100-7199 (FEATSYNC_BENCH_PORTS=lo-hi to change), and prints side by side, in one run: the push into each (first
push: SET NX; through the script for every row, into empty keys and onto existing ones), the push with --jobs 2 and 4 into
each, and the p50/p99 of reads of 1 and of 100 entities from each: OnlineReader.get (the
Python API) and AsyncOnlineReader.get_columns on the server's lean clients (featsync serve).
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
from typing import Any

import duckdb
import redis

from featsync.online.connections import redis_client
from featsync.online.push import Pusher
from featsync.project import Project
from workspace import Workspace, private_redis

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


TAKEN: set[int] = set()
# This benchmark's loopback ports (FEATSYNC_BENCH_PORTS=lo-hi, default 7100-7199): a cluster node's bus port is +10000.
PORTS = range(*(int(x) + i for i, x in enumerate(os.environ.get("FEATSYNC_BENCH_PORTS", "7100-7199").split("-"))))


def free_port() -> int:
    """A free port of PORTS whose cluster bus port (+10000) is free too."""
    for port in sorted(set(PORTS) - TAKEN):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            TAKEN.add(port)
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} (FEATSYNC_BENCH_PORTS)")


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


def cpu_seconds(client: redis.Redis) -> float:
    """CPU time so far of this process and of the Redis servers behind client (INFO cpu)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    servers = sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in (n.info("cpu") for n in nodes(client)))
    return usage.ru_utime + usage.ru_stime + servers


def timed_push(
    project: Project, client: redis.Redis, set_nx: bool, jobs: int = 1, keep: bool = False, existing: bool = False
) -> tuple[float, float, float]:
    """(seconds, Redis bytes per entity, CPU seconds of this process and the servers) of one
    full push of the bench view into empty keys; `existing`: onto the keys of an untimed
    push just before (a full refresh, the script for every row: the memory figure is then
    about 0)."""
    pusher = Pusher(project, client, key_prefix="bench", set_nx=set_nx)
    for pattern in pusher.key_patterns([VIEW]):
        clear(client, pattern)
    if existing:
        Pusher(project, client, key_prefix="bench").push([VIEW])
    base = used_memory(client)
    cpu = cpu_seconds(client)
    start = time.perf_counter()
    (stats,) = pusher.push([VIEW], jobs=jobs, full_refresh=existing)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(client) - cpu
    per_entity = (used_memory(client) - base) / stats.keys_written
    if not keep:
        for pattern in pusher.key_patterns([VIEW]):
            clear(client, pattern)
    return seconds, per_entity, cpu


def read_latencies(project: Project, clients: list[redis.Redis], n: int, entities: int, calls: int) -> list[tuple[float, float]]:
    """(p50, p99) in ms of OnlineReader.get of `entities` random entities, `calls` times, per
    client; each request goes to every client in turn, so load swings hit them alike."""
    import random

    import numpy as np

    from featsync.online.serving import OnlineReader

    readers = [OnlineReader(project.registry(), client, "bench") for client in clients]
    features = [f"{VIEW}:f{i}" for i in range(1, 6)]
    rng = random.Random(1)
    times: list[list[float]] = [[] for _ in clients]
    for _ in range(calls):
        rows = [{"entity_id": rng.randrange(n)} for _ in range(entities)]
        for reader, spent in zip(readers, times, strict=True):
            start = time.perf_counter()
            reader.get(rows, features=features)
            spent.append(time.perf_counter() - start)
    return [tuple(float(x) for x in np.percentile(spent, [50, 99]) * 1000) for spent in times]


def async_read_latencies(project: Project, urls: list[str], n: int, entities: int, calls: int) -> list[tuple[float, float]]:
    """The same as read_latencies through the HTTP server's reader (AsyncOnlineReader on
    connections.async_mget's lean client: AsyncMget, or AsyncClusterMget for a cluster)."""
    import asyncio
    import random

    import numpy as np

    from featsync.online.connections import async_mget, async_redis_client
    from featsync.online.serving import AsyncOnlineReader

    async def measure() -> list[tuple[float, float]]:
        readers = []
        for url in urls:
            reader = AsyncOnlineReader(project.registry(), async_redis_client(url, 5), "bench", timeout=5)
            reader.mget = async_mget(url, 5)
            readers.append(reader)
        features = [f"{VIEW}:f{i}" for i in range(1, 6)]
        rng = random.Random(1)
        times: list[list[float]] = [[] for _ in urls]
        for _ in range(calls):
            columns = {"entity_id": [rng.randrange(n) for _ in range(entities)]}
            for reader, spent in zip(readers, times, strict=True):
                start = time.perf_counter()
                await reader.get_columns(columns, features=features)
                spent.append(time.perf_counter() - start)
        for reader in readers:
            if reader.mget is not None:  # None: redis.asyncio's own reads (before AsyncClusterMget)
                await reader.mget.aclose()
            await reader.client.aclose()
        return [tuple(float(x) for x in np.percentile(spent, [50, 99]) * 1000) for spent in times]

    return asyncio.run(measure())


def compare_cluster(project: Project, rows: int) -> None:
    """One Redis and a 3-master cluster side by side, each push alternating between them."""
    with private_redis(free_port()) as single_url, local_cluster() as cluster_url:
        single, cluster = redis_client(project, single_url), redis_client(project, cluster_url)
        timed_push(project, single, set_nx=True)  # pays dbt's first in-process compile
        print(f"{rows:,} entities, 5 float features, no ttl; one redis-server vs a 3-master cluster, same settings,")
        print("all on this machine (the masters share its cores); best of 3 alternating runs each; CPU: this")
        print("process and the servers (INFO cpu), the figure a box shared with other work tells best")
        print(f"{'push':<52}{'one Redis':>12}{'cluster':>12}{'ratio':>8}{'CPU ratio':>11}")

        def best(**options: Any) -> tuple[float, float, float, float]:
            runs = [(timed_push(project, single, **options), timed_push(project, cluster, **options)) for _ in range(3)]
            return tuple(min(r[side][what] for r in runs) for what in (0, 2) for side in (0, 1))  # type: ignore[return-value]

        for label, options in (
            ("first push (SET NX while keys are absent)", {"set_nx": True}),
            ("Lua check-and-set for every row", {"set_nx": False}),
            ("Lua check-and-set onto existing keys (a refresh)", {"set_nx": False, "existing": True}),
            ("--jobs 2 (SET NX)", {"set_nx": True, "jobs": 2}),
            ("--jobs 4 (SET NX)", {"set_nx": True, "jobs": 4}),
        ):
            a, b, cpu_a, cpu_b = best(**options)
            print(f"{label:<52}{rows / a:>10,.0f}/s{rows / b:>10,.0f}/s{b / a:>7.2f}x{cpu_b / cpu_a:>10.2f}x")
        print(f"{'reads (OnlineReader.get, 5 features)':<52}{'one Redis':>12}{'cluster':>12}{'p99 ratio':>10}")
        for client in (single, cluster):
            timed_push(project, client, set_nx=True, keep=True)
        time.sleep(2)  # let the servers finish their background work (lazy frees, rehashing)
        for entities, calls in ((1, 3000), (100, 500)):
            (a50, a99), (b50, b99) = read_latencies(project, [single, cluster], rows, entities, calls)
            label = f"{entities} entit{'y' if entities == 1 else 'ies'} per request, p50 / p99 ms"
            print(f"{label:<52}{a50:>5.2f}/{a99:<6.2f}{b50:>5.2f}/{b99:<6.2f}{b99 / a99:>9.2f}x")
        print(f"{'reads, the server (AsyncOnlineReader, 5 features)':<52}{'one Redis':>12}{'cluster':>12}{'p99 ratio':>10}")
        for entities, calls in ((1, 3000), (100, 500)):
            (a50, a99), (b50, b99) = async_read_latencies(project, [single_url, cluster_url], rows, entities, calls)
            label = f"{entities} entit{'y' if entities == 1 else 'ies'} per request, p50 / p99 ms"
            print(f"{label:<52}{a50:>5.2f}/{a99:<6.2f}{b50:>5.2f}/{b99:<6.2f}{b99 / a99:>9.2f}x")
        for client in (single, cluster):
            clear(client, "bench*")


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
        if args.cluster:
            compare_cluster(project, args.rows)
            return
        url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        run(project, redis_client(project, url), url, work, args)
    finally:
        work.remove()


def run(project: Project, client: redis.Redis, url: str, work: Workspace, args: argparse.Namespace) -> None:
    n = args.rows
    cold_s, cold_bytes, _ = timed_push(project, client, set_nx=True)  # pays dbt's first in-process compile
    push_peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"{n:,} entities, 5 float features, no ttl, Redis at {url} (shares the machine)")
    if args.skip_baseline:
        print(
            f"featsync push: {n / cold_s:,.0f} rows/s, {cold_bytes:.0f} bytes/entity in Redis, "
            f"{cold_s:.1f} s, peak RSS {push_peak_gb:.2f} GB"
        )
        return
    script_s, script_bytes, _ = timed_push(project, client, set_nx=False)
    warm_s, warm_bytes, _ = timed_push(project, client, set_nx=True)
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
