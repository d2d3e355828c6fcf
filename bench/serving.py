"""Benchmark: online reads in-process and over HTTP, each beside a baseline measured in the same run.

    .venv/bin/python bench/serving.py                 # everything (about 3 minutes)
    .venv/bin/python bench/serving.py --skip-load     # no wrk runs
    FEATSYNC_BENCH_REDIS_URL=redis://host:port/0 ...  (default redis://127.0.0.1:6379/0)

A scratch dbt project (featsync as a local package) defines two feature views with 5
features (user: 3, merchant: 2 incl. text) and five wide views of 10 features each, over
--entities generated rows on DuckDB; `featsync push` writes them under a key prefix of
their own, deleted at the end.

1. In-process, one entity (2 views, 5 features): FeatureStore-style `OnlineReader.get`
   beside a bare redis-py MGET of the same two keys plus decoding them; then 100 entities.
2. HTTP, one client (wrk -t1 -c1): `featsync serve --workers 1` beside a bare Starlette +
   uvicorn endpoint that does one async MGET of two keys and nothing else.
3. HTTP under load (wrk -t2 -c8, 2 server workers): the same pair.
4. Wide requests (50 features over 5 views) at batch 1 / 10 / 100 entities, one client,
   beside Feast's published Go feature-server p99 (4.3 / 3.9 / 22.2 ms).

Entities are drawn at random per request (wrk: one of 500 prepared bodies per request).
The machine is shared: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import redis

from featsync.online.push import Pusher
from featsync.online.serving import OnlineReader
from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent
FEATURES_5 = [
    "bench_user:txn_count_7d",
    "bench_user:amount_sum_7d",
    "bench_user:amount_avg_30d",
    "bench_merchant:chargeback_rate_30d",
    "bench_merchant:risk_tier",
]
WIDE = [f"wide_{v}:w{v}_f{j}" for v in range(1, 6) for j in range(10)]
FEAST_GO_P99 = {1: 4.3, 10: 3.9, 100: 22.2}

PROJECT = """
name: featsync_serve_bench
version: "1.0.0"
config-version: 2
profile: featsync_serve_bench
models:
  featsync_serve_bench: {+materialized: table}
flags: {send_anonymous_usage_stats: false}
"""
PROFILES = """
featsync_serve_bench:
  target: dev
  outputs:
    dev: {type: duckdb, path: "%s", schema: main, threads: 2, settings: {TimeZone: UTC}}
"""
BARE_APP = '''
"""The baseline: a bare Starlette endpoint doing one async MGET of two fixed keys."""
import contextlib, os
import redis.asyncio
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

KEYS = os.environ["BARE_KEYS"].split(",")
SIZE = int(os.environ.get("BARE_BODY_BYTES", "0"))  # pad the answer to this many bytes (0: none)
state = {}

@contextlib.asynccontextmanager
async def lifespan(app):
    state["client"] = redis.asyncio.Redis.from_url(os.environ["BARE_REDIS_URL"])
    yield
    await state["client"].aclose()

async def endpoint(request):
    await request.body()
    values = await state["client"].mget(KEYS)
    body = b'{"found":%d' % sum(v is not None for v in values)
    if SIZE:
        body += b',"pad":"' + b"x" * max(0, SIZE - len(body) - 10) + b'"'
    return Response(body + b"}", media_type="application/json")

app = Starlette(routes=[Route("/get-online-features", endpoint, methods=["POST"])], lifespan=lifespan)
'''


def write_project(root: Path, entities: int) -> Path:
    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(PROJECT)
    (project / "profiles.yml").write_text(PROFILES % (root / "bench.duckdb"))
    (project / "packages.yml").write_text(f"packages:\n  - local: {ROOT / 'package'}\n")
    ts = "timestamp '2026-01-01' + to_seconds(i % 86400)"
    models = {
        "bench_user": (
            "user_id",
            [
                ("txn_count_7d", "bigint", "i % 40"),
                ("amount_sum_7d", "float8", "i / 3.0"),
                ("amount_avg_30d", "float8", "i / 7.0"),
            ],
        ),
        "bench_merchant": (
            "merchant_id",
            [
                ("chargeback_rate_30d", "float8", "(i % 100) / 1000.0"),
                ("risk_tier", "text", "['low', 'medium', 'high'][i % 3 + 1]"),
            ],
        ),
    }
    for v in range(1, 6):
        models[f"wide_{v}"] = ("entity_id", [(f"w{v}_f{j}", "float8", f"(i * {j + v}) % 997 / 7.0") for j in range(10)])
    yml = ["models:"]
    for name, (key, features) in models.items():
        columns = ", ".join(f"({expr})::{dtype} as {col}" for col, dtype, expr in features)
        sql = f"select i::bigint as {key}, {ts} as event_timestamp, {columns} from range({entities}) t(i)"
        (project / "models" / f"{name}.sql").write_text(sql)
        yml.append(f"  - name: {name}")
        yml.append("    config:")
        yml.append(f"      meta: {{feature_view: {{entities: [{key}], timestamp: event_timestamp, ttl: 3650d, online: true}}}}")
        yml.append("    columns:")
        yml.append(f"      - {{name: {key}, data_type: bigint}}")
        yml.append("      - {name: event_timestamp, data_type: timestamp}")
        yml += [f"      - {{name: {col}, data_type: {dtype}}}" for col, dtype, _ in features]
    (project / "models" / "bench.yml").write_text("\n".join(yml) + "\n")
    return project


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return ordered[len(ordered) // 2] / 1e6, ordered[int(len(ordered) * 0.99)] / 1e6


def timed(fn, args_list: list) -> list[int]:
    out = []
    for args in args_list:
        start = time.perf_counter_ns()
        fn(*args)
        out.append(time.perf_counter_ns() - start)
    return out


def row(label: str, ours: tuple[float, float], base: tuple[float, float], target: str) -> None:
    print(f"  {label:<36} ours p50 {ours[0]:6.3f} ms  p99 {ours[1]:6.3f} ms | baseline p50 {base[0]:6.3f}  p99 {base[1]:6.3f}")
    print(f"  {'':<36} {target}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def start(args: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    wait_idle(proc.pid)
    return proc


def wait_idle(pid: int, seconds: float = 120) -> None:
    """Until the server's processes stop using CPU: every worker has started.

    The port accepts as soon as the parent listens, and a featsync worker loads its project
    for seconds after that (more on a loaded box): a wrk run starting before every worker is up
    would put all its connections on the workers that are, for its whole run."""
    deadline = time.monotonic() + seconds
    used = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - used < 0.05:
            return
        used = now


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the uvicorn workers), from /proc."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return total


def wrk(
    port: int, bodies: list[bytes], threads: int, connections: int, seconds: int, workdir: Path, pid: int | None = None
) -> tuple[float, float, float, float]:
    """(req/s, p50 ms, p99 ms, server CPU us per request) of POST /get-online-features, one of `bodies` per request.

    CPU per request is the noise-robust figure on a shared box: it counts only the server's own work."""
    script = workdir / f"bodies-{uuid.uuid4().hex[:6]}.lua"
    items = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{items}\n}}\n"
        "request = function() return wrk.format(nil, nil, nil, bodies[math.random(#bodies)]) end\n"
    )
    url = f"http://127.0.0.1:{port}/get-online-features"
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    cpu = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu if pid else 0.0
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, ms("50%"), ms("99%"), cpu / max(requests, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--load-only", action="store_true", help="only the HTTP-under-load pair (section 3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating wrk runs of each server under load")
    args = parser.parse_args()
    url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    prefix = f"bench-serve-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="featsync-serve-bench-"))
    os.environ.setdefault("DBT_LOG_PATH", str(root / "logs"))
    servers: list[subprocess.Popen] = []
    pusher: Pusher | None = None
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores, shared)")
    try:
        project_dir = write_project(root, args.entities)
        project = Project.open(project_dir, project_dir, "dev")
        project.run_dbt(["deps"])
        project.run_dbt(["run"])
        pusher = Pusher(project, client, key_prefix=prefix)
        pusher.push()
        registry = project.registry()
        reader = OnlineReader(registry, client, prefix)
        n = args.entities
        rand = random.Random(7)

        # 1. In-process: one entity, two views, five features.
        plan = reader.plan(FEATURES_5, None, False)
        layouts = [read.layout for read in plan.views]
        in_process = not args.load_only

        def bare(keys):
            for layout, value in zip(layouts, client.mget(keys), strict=True):
                layout.decode_row(value)

        def ours(rows):
            reader.get(rows, features=FEATURES_5)

        def one():
            u, m = rand.randrange(n), rand.randrange(n)
            return u, m

        samples: dict[str, list[int]] = {"ours": [], "bare": []}
        for _ in range(10 if in_process else 0):
            picks = [one() for _ in range(500)]
            samples["bare"] += timed(bare, [([layouts[0].key([u]), layouts[1].key([m])],) for u, m in picks])
            samples["ours"] += timed(ours, [([{"user_id": u, "merchant_id": m}],) for u, m in picks])
        if in_process:
            print("In-process (OnlineReader.get vs redis-py MGET + decode of the same keys), 5,000 reads each:")
            ours_, bare_ = percentiles(samples["ours"]), percentiles(samples["bare"])
            row("1 entity, 2 views, 5 features", ours_, bare_, "target p99 <= 0.25 ms")

        samples = {"ours": [], "bare": []}
        for _ in range(5 if in_process else 0):
            picks = [[one() for _ in range(100)] for _ in range(100)]
            samples["bare"] += timed(
                lambda keys: [layouts[i % 2].decode_row(v) for i, v in enumerate(client.mget(keys)) if v],
                [([k for u, m in p for k in (layouts[0].key([u]), layouts[1].key([m]))],) for p in picks],
            )
            samples["ours"] += timed(ours, [([{"user_id": u, "merchant_id": m} for u, m in p],) for p in picks])
        if in_process:
            row(
                "100 entities, 2 views, 5 features",
                percentiles(samples["ours"]),
                percentiles(samples["bare"]),
                "target p50 <= 1.5 ms",
            )

        # 2-4. HTTP.
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed (apt-get install -y wrk); HTTP figures skipped")
        (root / "bare_app.py").write_text(textwrap.dedent(BARE_APP))
        bare_keys = ",".join(k.decode() for k in (layouts[0].key([1]), layouts[1].key([2])))

        def bodies(features: list[str], batch: int, entity_names: list[str]) -> list[bytes]:
            out = []
            for _ in range(500):
                entities = {name: [rand.randrange(n) for _ in range(batch)] for name in entity_names}
                out.append(orjson.dumps({"features": features, "entities": entities}))
            return out

        five = bodies(FEATURES_5, 1, ["user_id", "merchant_id"])

        def featsync_server(workers: int) -> tuple[int, int]:
            port = free_port()
            cmd = [sys.executable, "-m", "featsync", "serve", "--project-dir", str(project_dir), "--redis-url", url]
            cmd += ["--key-prefix", prefix, "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
            servers.append(start(cmd, port))
            return port, servers[-1].pid

        def bare_server(workers: int, body_bytes: int = 0) -> tuple[int, int]:
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(root), "--port", str(port)]
            cmd += ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
            env = {"BARE_KEYS": bare_keys, "BARE_REDIS_URL": url, "BARE_BODY_BYTES": str(body_bytes)}
            servers.append(start(cmd, port, env))
            return port, servers[-1].pid

        def answer_bytes(port: int, body: bytes) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                return len(response.read())

        def stop_all() -> None:
            while servers:
                stop(servers.pop())

        def cpu(o: tuple, b: tuple) -> str:
            return f"server CPU per request: ours {o[3]:.0f} us, bare {b[3]:.0f} us (+{o[3] - b[3]:.0f} us)"

        def one_client(s: int) -> None:
            ours, bare_ = featsync_server(1), bare_server(1)
            print(f"\nHTTP, one client (wrk -t1 -c1 -d{s}s, 1 server worker; POST /get-online-features, 1 entity, 5 features),")
            print("two rounds, alternating (the spread between rounds is the box's noise):")
            wrk(ours[0], five, 1, 1, 2, root)  # warm-up
            for _ in range(2):
                o, b = wrk(ours[0], five, 1, 1, s, root, ours[1]), wrk(bare_[0], five, 1, 1, s, root, bare_[1])
                row(f"1 entity: {o[0]:,.0f} vs {b[0]:,.0f} req/s", o[1:3], b[1:3], "target p99 <= 0.8 ms; " + cpu(o, b))

            print(f"\nWide requests, one client (wrk -t1 -c1 -d{s}s, 1 worker): 50 features over 5 views")
            for batch in (1, 10, 100):
                body = bodies(WIDE, batch, ["entity_id"])
                o = wrk(ours[0], body, 1, 1, s, root, ours[1])
                print(
                    f"  batch {batch:>3}: p50 {o[1]:6.3f} ms  p99 {o[2]:6.3f} ms  ({o[0]:,.0f} req/s, {o[3]:.0f} us CPU/request)"
                    f" | Feast Go server p99 {FEAST_GO_P99[batch]} ms (published)"
                )
            stop_all()

        s = args.seconds
        if not args.load_only:
            one_client(s)

        if not args.skip_load:
            ours, bare_ = featsync_server(2), bare_server(2)
            # For reference only (the target's baseline stays the bare endpoint above): the
            # same bare endpoint answering as many bytes as featsync's Feast-shaped answer, so
            # the share of the gap that is the answer's size (sent, and parsed by wrk on the
            # same cores) is measured in the same run.
            size = answer_bytes(ours[0], five[0])
            padded = bare_server(2, size)
            print(f"\nHTTP under load (wrk -t2 -c8 -d{s}s, 2 server workers, wrk + servers + Redis on the same 2 cores),")
            print(f"{args.rounds} rounds, alternating; targets: >= 90 % of bare's req/s, p99 <= 3 ms:")
            for port, _ in (ours, bare_, padded):  # warm-up
                wrk(port, five, 2, 8, 2, root)
            for _ in range(args.rounds):
                o, b = wrk(ours[0], five, 2, 8, s, root, ours[1]), wrk(bare_[0], five, 2, 8, s, root, bare_[1])
                q = wrk(padded[0], five, 2, 8, s, root, padded[1])
                print(f"  featsync serve: {o[0]:8,.0f} req/s  p50 {o[1]:6.3f} ms  p99 {o[2]:6.3f} ms")
                print(f"  bare baseline:  {b[0]:8,.0f} req/s  p50 {b[1]:6.3f} ms  p99 {b[2]:6.3f} ms")
                print(f"  {o[0] / b[0]:.0%} of bare's req/s, p99 {o[2] / b[2]:.2f} x bare's; {cpu(o, b)}")
                print(
                    f"  (reference: bare padded to featsync's {size} bytes: {q[0]:,.0f} req/s, p99 {q[2]:.3f} ms, "
                    f"{q[0] / b[0]:.0%} of bare; featsync at {o[0] / q[0]:.0%} of it)"
                )
            stop_all()
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        while servers:
            stop(servers.pop())
        patterns = pusher.key_patterns() if pusher is not None else []
        keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=10_000)]
        for i in range(0, len(keys), 10_000):
            client.unlink(*keys[i : i + 10_000])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
