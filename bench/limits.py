"""Benchmark: what the server's limits (featsync.online.limits.guard) add to a request.

    .venv/bin/python bench/limits.py                 # 5 runs of 20,000 requests each

In-process ASGI calls (no sockets), so only the middleware's own cost shows: a Starlette
endpoint that reads a 120-byte JSON body and answers it, called bare and wrapped by
`guard` (body limit, JSON 500s) as `featsync serve` wraps its app. For scale, the same
endpoint with the body read under one `asyncio.timeout` (the design the sweeping deadlines
replaced; they live in the HTTP protocol now, measured by `serve_cpu.py --parts`). Best of
the runs, microseconds per request, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from featsync.online.limits import guard, server_error_handler
from featsync.online.server import error

BODY = b'{"features": ["user_transaction_features:transaction_count_7d"], "entities": {"user_id": ["u0001"]}}'.ljust(120)
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/get-online-features",
    "raw_path": b"/get-online-features",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"120")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 6566),
}


async def endpoint(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


def timed_read(app):
    """The rejected design: every body read under its own asyncio.timeout."""

    async def wrapped(scope, receive, send):
        async def bounded():
            async with asyncio.timeout(10):
                return await receive()

        await app(scope, bounded, send)

    return wrapped


async def receive() -> dict:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: dict) -> None:
    pass


async def per_request_us(app, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter_ns() - start) / n / 1000


async def main(runs: int, n: int) -> None:
    starlette = Starlette(
        routes=[Route("/get-online-features", endpoint, methods=["POST"])],
        exception_handlers={Exception: server_error_handler(error)},
    )
    guarded = guard(
        starlette,
        max_body_bytes=1 << 20,
        error=error,
        count_error=lambda endpoint, kind: None,
        observe=lambda endpoint, code, seconds: None,
        endpoints=["/get-online-features"],
    )
    apps = {"bare Starlette app": starlette, "guard (featsync serve)": guarded, "asyncio.timeout per read": timed_read(starlette)}
    for app in apps.values():
        await per_request_us(app, n // 4)  # warm up
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(runs):  # interleaved, so a change in the machine's load hits all three alike
        for name, app in apps.items():
            best[name] = min(best[name], await per_request_us(app, n))
    bare = best["bare Starlette app"]
    print(f"{'':28} {'us/request':>10} {'vs bare':>8}")
    for name, us in best.items():
        print(f"{name:28} {us:10.2f} {us / bare:7.2f}x   (+{us - bare:.2f} us)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.runs, args.requests))
    except ImportError:
        asyncio.run(main(args.runs, args.requests))
