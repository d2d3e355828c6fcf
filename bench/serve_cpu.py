"""Profile: the server CPU of one request, in-process, featsync's stack beside the bare one.

    .venv/bin/python bench/serve_cpu.py                  # CPU us/request of each stack
    .venv/bin/python bench/serve_cpu.py --profile ours   # plus a cProfile of featsync's stack

No sockets and no client: each stack is uvicorn's httptools protocol on a stub transport,
fed whole requests by `data_received` the way uvicorn's server feeds it, on uvloop, with
--connections kept-alive connections in flight at once (as wrk -c8 gives each of 2
workers). What is measured is the process's CPU time per request (Redis answers from its
own process), so the neighbours' load moves it far less than the req/s of `serving.py`.

Stacks: `bare` is serving.py's baseline (plain HttpToolsProtocol, a Starlette endpoint with
one redis-py MGET); `ours` is `featsync serve` (ReadDeadlineProtocol, guard, the app);
`ours-nolimits` is the same app without the protocol's deadline and without the guard.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import importlib.util
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop
from uvicorn.config import Config
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).parent))
from featsync.online.limits import ReadDeadlineProtocol  # noqa: E402
from featsync.online.push import Pusher  # noqa: E402
from featsync.online.server import ServeConfig, create_app  # noqa: E402
from featsync.project import Project  # noqa: E402
from serving import BARE_APP, FEATURES_5, write_project  # noqa: E402


class StubTransport(asyncio.Transport):
    """What uvicorn's protocol needs of a transport; counts the responses written."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.done: asyncio.Future | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 6566), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def request_bytes(body: bytes) -> bytes:
    head = b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1:6566\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Stack:
    """One server stack on the running loop: its app started (lifespan), `connections` connections open."""

    def __init__(self, protocol_class: Any, app: Any, requests: list[bytes], connections: int) -> None:
        self.config = Config(app, http=protocol_class, lifespan="on", access_log=False, log_level="warning")
        self.config.load()
        self.requests = requests
        self.connections = connections

    async def start(self) -> None:
        self.lifespan = LifespanOn(self.config)
        await self.lifespan.startup()
        self.state = ServerState()

    async def stop(self) -> None:
        await self.lifespan.shutdown()

    async def cpu_per_request(self, n: int) -> float:
        """CPU seconds per request of `n` requests over the connections, all in flight at once."""
        loop = asyncio.get_running_loop()
        per_connection = n // self.connections

        async def connection() -> None:
            transport = StubTransport()
            protocol = self.config.http_protocol_class(config=self.config, server_state=self.state, app_state={}, _loop=loop)
            protocol.connection_made(transport)
            original = protocol.on_response_complete

            def completed() -> None:
                original()
                transport.done.set_result(None)

            protocol.on_response_complete = completed
            for _ in range(per_connection):
                transport.done = loop.create_future()
                protocol.data_received(random.choice(self.requests))
                await transport.done
            protocol.connection_lost(None)

        cpu = time.process_time()
        await asyncio.gather(*(connection() for _ in range(self.connections)))
        return (time.process_time() - cpu) / (per_connection * self.connections)


async def measure(stacks: dict[str, Stack], rounds: int, n: int) -> dict[str, list[float]]:
    """Rounds of `n` requests per stack, the stacks interleaved (the box's load hits them alike)."""
    for stack in stacks.values():
        await stack.start()
        await stack.cpu_per_request(n)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in stacks}
    for _ in range(rounds):
        for name, stack in stacks.items():
            samples[name].append(await stack.cpu_per_request(n))
    for stack in stacks.values():
        await stack.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000, help="per round and stack")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--parts", action="store_true", help="also featsync's app without its limits, and with each alone")
    parser.add_argument("--profile", choices=["ours", "bare"], help="then a cProfile (CPU time) of that stack")
    args = parser.parse_args()
    url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url)
    prefix = f"bench-servecpu-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="featsync-servecpu-"))
    os.environ.setdefault("DBT_LOG_PATH", str(root / "logs"))
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    metrics_dir = root / "metrics"
    metrics_dir.mkdir()
    entities = 10_000
    project_dir = write_project(root, entities)
    project = Project.open(project_dir, project_dir, "dev")
    project.run_dbt(["deps"])
    project.run_dbt(["run"])
    pusher = Pusher(project, client, key_prefix=prefix)
    try:
        pusher.push()
        layouts = [pusher.layout(project.registry().feature_view(v)) for v in ("bench_user", "bench_merchant")]
        rand = random.Random(7)
        bodies = [
            orjson.dumps(
                {
                    "features": FEATURES_5,
                    "entities": {"user_id": [rand.randrange(entities)], "merchant_id": [rand.randrange(entities)]},
                }
            )
            for _ in range(500)
        ]
        os.environ["BARE_KEYS"] = ",".join(k.decode() for k in (layouts[0].key([1]), layouts[1].key([2])))
        os.environ["BARE_REDIS_URL"] = url
        spec = importlib.util.spec_from_loader("bare_app", loader=None)
        bare_module = importlib.util.module_from_spec(spec)
        exec(BARE_APP, bare_module.__dict__)  # noqa: S102 (the benchmark's own baseline source)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # as featsync serve runs its workers
        config = ServeConfig(str(project_dir), str(project_dir), "dev", url, prefix)
        ours = create_app(config)
        requests = [request_bytes(b) for b in bodies]
        protocol = functools.partial(ReadDeadlineProtocol, read_timeout=config.read_timeout)
        apps = {"bare": (HttpToolsProtocol, bare_module.app), "ours": (protocol, ours)}
        if args.parts:
            apps |= {
                "ours, no limits": (HttpToolsProtocol, nolimits(ours)),
                "ours, protocol only": (protocol, nolimits(ours)),
                "ours, guard only": (HttpToolsProtocol, ours),
            }
        stacks = {name: Stack(p, app, requests, args.connections) for name, (p, app) in apps.items()}
        samples = uvloop.run(measure(stacks, args.rounds, args.requests))
        print(f"Server CPU per request, in-process: {args.rounds} interleaved rounds of {args.requests:,} requests per stack,")
        print(f"{args.connections} connections in flight; min and median over the rounds:")
        base = min(samples["bare"]) * 1e6
        for name, cpu in samples.items():
            low, mid = min(cpu) * 1e6, statistics.median(cpu) * 1e6
            print(f"  {name:<20} min {low:6.1f} us  median {mid:6.1f} us   {low / base:5.2f} x bare (+{low - base:.1f} us)")
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU time: Redis waking up must not count
            stack = stacks[args.profile]

            async def profiled() -> None:
                await stack.start()
                profiler.enable()
                await stack.cpu_per_request(args.requests * 5)
                profiler.disable()
                await stack.stop()

            uvloop.run(profiled())
            pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    finally:
        patterns = pusher.key_patterns()
        keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=10_000)]
        for i in range(0, len(keys), 10_000):
            client.unlink(*keys[i : i + 10_000])


def nolimits(guarded: Any) -> Any:
    """The app under `guard` (a closure cell of guarded_app): the hot route's `direct_post`
    around the Starlette app."""
    for cell in guarded.__closure__ or ():
        if getattr(cell.cell_contents, "__name__", None) == "direct" or hasattr(cell.cell_contents, "router"):
            return cell.cell_contents
    raise RuntimeError("no app under the guard")


if __name__ == "__main__":
    main()
