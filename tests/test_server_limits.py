"""What one client may cost `featsync serve` (issue 11): body size, slow clients, JSON 500s,
the bounded plan cache, the bearer token and secrets kept out of workers' environments.

Real `featsync serve` processes on free loopback ports, real Redis (the shared one under a
key prefix of the test's own, and a private password-protected redis-server), raw sockets
for the clients that misbehave.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import delete_pushed_keys
from featsync.cli import main
from featsync.online.limits import ReadDeadlineProtocol, guard, server_error_handler
from featsync.online.metrics import Metrics
from featsync.online.plan_cache import PlanCache
from featsync.online.push import Pusher
from featsync.online.server import error
from featsync.online.serving import OnlineReader
from featsync.results import result_path
from test_push import PAIRS, PROFILES, USERS, load, project, start_redis  # noqa: F401 (fixtures)
from test_server import launch, start_server, stop

MAX_BODY = 4096
READ_TIMEOUT = 1.0
TOKEN = "guard-token-" + uuid.uuid4().hex
PASSWORD = "pw-" + uuid.uuid4().hex  # searched for in the workers' environments


@pytest.fixture(scope="module")
def limited(project, redis_url):  # noqa: F811
    """The pit project under a prefix of its own, served with a small body limit and short read timeout."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-guard-{uuid.uuid4().hex[:8]}"
    load(USERS, PAIRS, PROFILES)
    pusher = Pusher(project, client, key_prefix=prefix)
    pusher.push()
    layout = pusher.layout(project.registry().feature_view("fv_user"))
    client.set(layout.key(["corrupt"]), b"x" * 3)  # no featsync layout is 3 bytes long: a StoredValueError
    extra = ["--max-body-bytes", str(MAX_BODY), "--read-timeout", str(READ_TIMEOUT)]
    proc, base = start_server(project, redis_url, prefix, *extra)
    port = int(base.rsplit(":", 1)[1])
    with httpx.Client(base_url=base, timeout=10) as http:
        yield http, port
    stop(proc)
    delete_pushed_keys(project, client, prefix)


def raw(port: int, data: bytes, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(data)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a raw socket (Content-Length bodies only), until the server stops sending."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "the response body was cut short"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None: still open after `seconds`), sending one
    byte of `trickle` every 0.2 s meanwhile, as a slow-loris client does."""
    start = time.monotonic()
    sock.settimeout(0.2)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] or [b""] * 10**6:
        if time.monotonic() - start > seconds:
            return None
        try:
            if byte:
                sock.sendall(byte)
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    return None


def errors_counted(http: httpx.Client) -> dict[tuple[str, str], float]:
    text = http.get("/metrics").text
    found = re.findall(r'^featsync_errors_total\{endpoint="([^"]*)",kind="([^"]*)"\} (\S+)$', text, re.M)
    return {(endpoint, kind): float(value) for endpoint, kind, value in found}


# -- body size ---------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(limited):
    """Only the headers are sent: the 413 must come without waiting for the 10 MB announced."""
    http, port = limited
    head = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    with raw(port, head + b"Content-Length: 10000000\r\n\r\n") as sock:
        status, headers, body = read_response(sock)
    assert status == 413 and headers["content-type"] == "application/json"
    detail = httpx.Response(413, content=body).json()["detail"]  # (the error body may carry more keys: Feast's)
    assert detail == f"request body is larger than the server's maximum of {MAX_BODY} bytes"
    assert headers.get("connection") == "close"
    assert errors_counted(http)[("/get-online-features", "body_too_large")] >= 1


def test_a_chunked_body_is_counted_and_refused_past_the_limit(limited):
    """No Content-Length: the chunks are counted as they come; the client is cut off past the limit."""
    http, port = limited
    head = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (1024, b" " * 1024)
    with raw(port, head) as sock:
        for _ in range(MAX_BODY // 1024 + 1):  # one chunk past the limit, and never the last chunk
            sock.sendall(chunk)
        status, headers, body = read_response(sock)
    assert status == 413 and headers["content-type"] == "application/json"
    assert "larger than the server's maximum" in httpx.Response(413, content=body).json()["detail"]


def test_a_body_under_the_limit_is_served(limited):
    http, _ = limited
    features = ["fv_user:amount"] * 100  # ~1.7 KB of duplicates, under the 4 KiB limit: one column
    response = http.post("/get-online-features", json={"features": features, "entities": {"user_id": ["u1"]}})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["feature_names"] == ["user_id", "amount"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_arrives_in_pieces_is_answered_as_a_whole_one(limited, framing):
    """The hot route reads the body message by message (featsync.online.limits.direct_post):
    a body sent in pieces, apart in time, gets the answer the same body sent at once gets."""
    http, port = limited
    body = json.dumps({"features": ["fv_user:amount"], "entities": {"user_id": ["u1", "corrupt-not", "u2"]}}).encode()
    whole = http.post("/get-online-features", content=body, headers={"content-type": "application/json"})
    assert whole.status_code == 200, whole.text
    pieces = [body[:7], body[7:30], body[30:]]
    head = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    else:
        head += b"Content-Length: %d\r\n\r\n" % len(body)
    with raw(port, head) as sock:
        for piece in pieces:
            time.sleep(0.05)
            sock.sendall(piece)
        status, headers, answer = read_response(sock)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(answer) == whole.json()


# -- what the headers alone decide ------------------------------------------------------------


@pytest.fixture(scope="module")
def tokened(project, redis_url, tmp_path_factory):  # noqa: F811
    """The pit project served with a token on reads and writes (--auth-reads) and a short read timeout."""
    prefix = f"featsync-guard-{uuid.uuid4().hex[:8]}"
    token = token_file(tmp_path_factory.mktemp("token"), TOKEN)
    extra = ["--auth-token-file", token, "--auth-reads", "--read-timeout", str(READ_TIMEOUT), "--max-body-bytes", str(MAX_BODY)]
    proc, base = start_server(project, redis_url, prefix, *extra)
    with httpx.Client(base_url=base, timeout=10) as http:
        yield http, int(base.rsplit(":", 1)[1])
    stop(proc)


@pytest.mark.parametrize("path", ["/push", "/write-to-online-store", "/get-online-features"])
def test_a_chunked_body_without_the_token_is_refused_before_it_is_read(tokened, path):
    """Only the headers are sent: the 401 must come at once. The guard read a chunked body whole
    (up to --max-body-bytes) before /push's token was checked, so token-less clients could hold
    that much memory each until the read deadline (then a 408)."""
    http, port = tokened
    before = errors_counted(http).get((path, "unauthorized"), 0)
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    with raw(port, head.encode()) as sock:
        status, headers, body = read_response(sock)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
    assert json.loads(body)["detail"] == "missing or wrong bearer token"
    assert errors_counted(http)[(path, "unauthorized")] == before + 1


def test_the_token_is_checked_once_for_writes_with_it(tokened):
    """With the token, the write reaches the endpoint (a 404 for an unknown view: past the guard)."""
    http, _ = tokened
    good = {"authorization": f"Bearer {TOKEN}"}
    reply = http.post("/push", json={"push_source_name": "nope", "df": {"user_id": ["x"]}}, headers=good)
    assert reply.status_code == 404, reply.text
    assert http.post("/push", json={"push_source_name": "nope", "df": {}}).status_code == 401


def test_a_chunked_body_of_a_get_is_not_read_ahead(limited):
    """No route reads the body of anything but a POST: a GET announcing a chunked body it never
    sends is answered at once (the guard read it whole first, until the 408)."""
    _, port = limited
    with raw(port, b"GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n") as sock:
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        None,  # a browser's fetch() of a Blob body without a type: no Content-Type at all
    ],
)
@pytest.mark.parametrize("path", ["/push", "/write-to-online-store"])
def test_a_write_not_sent_as_json_is_415_and_writes_nothing(limited, path, content_type):
    """CSRF: a web page can make a browser POST text/plain, a form, multipart or an untyped body
    to a server without a token (no CORS preflight for those), and the body was parsed as JSON
    and written. Now 415 before the body is read; JSON (any charset) is still what Feast sends."""
    http, port = limited
    name = "push_source_name" if path == "/push" else "feature_view_name"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    row = {"user_id": ["csrf"], "event_timestamp": [at], "amount": [999], "label": ["evil"]}
    body = json.dumps({name: "fv_user", "df": row}).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n"
    head += f"Content-Type: {content_type}\r\n" if content_type else ""
    with raw(port, head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body) as sock:
        status, headers, answer = read_response(sock)
    assert status == 415 and headers["content-type"] == "application/json", answer
    assert json.loads(answer)["detail"] == "the request body must be JSON, sent with 'Content-Type: application/json'"
    assert errors_counted(http)[(path, "unsupported_media_type")] >= 1
    read = {"features": ["fv_user:amount"], "entities": {"user_id": ["csrf"]}}
    assert http.post("/get-online-features", json=read).json()["results"][1]["values"] == [None]


def test_json_with_parameters_is_a_write_and_reads_take_any_type(limited):
    """`application/json; charset=utf-8` (any case) is JSON; reads stay open to `curl -d` (a form
    type): a page elsewhere can send one but never read its answer (the server sends no CORS headers)."""
    http, _ = limited
    body = json.dumps({"push_source_name": "nope", "df": {"user_id": ["x"]}})
    reply = http.post("/push", content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert reply.status_code == 404, reply.text  # past the guard: no such view
    read = json.dumps({"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}})
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        reply = http.post("/get-online-features", content=read, headers={"content-type": content_type})
        assert reply.status_code == 200, reply.text


def test_headers_over_64_kib_in_one_piece_are_431(limited):
    """70 kB of headers sent at once (one read, or a read that completes them) were served:
    the limit was only checked while the headers were still incomplete."""
    http, port = limited
    request = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    with raw(port, request) as sock:
        status, headers, body = read_response(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body)["detail"] == "request line and headers are larger than 65536 bytes"
    under = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    with raw(port, under) as sock:
        assert read_response(sock)[0] == 200
    body = json.dumps({"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}}).encode()
    post = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    padded = post + b"X-Pad: " + b"b" * 63_000 + b"\r\nContent-Length: %d\r\n\r\n" % (len(body) + 3_000)
    with raw(port, padded + body + b" " * 3_000) as sock:  # headers and body over 64 KiB together: served
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b'POST /get-online-features HTTP/1.1\r\nHost: t\r\n\r\n{"features": []}',  # a body without a length
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Bad\x01: a\r\n\r\n",
    ],
)
def test_requests_that_are_not_http_get_a_json_400(limited, request_bytes):
    """uvicorn answers what httptools cannot parse itself, in text/plain: now the server's JSON shape."""
    _, port = limited
    with raw(port, request_bytes) as sock:
        status, headers, body = read_response(sock)
    assert status == 400 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)
    assert error["detail"].startswith("the request is not valid HTTP/1.1: ") and error["message"] == error["detail"]


# -- slow clients ------------------------------------------------------------------------------


def test_slow_loris_headers_are_cut_off(limited):
    """Headers trickled a byte at a time: the connection is closed after --read-timeout."""
    _, port = limited
    with raw(port, b"POST /get-online-features HTTP/1.1\r\nHost: t\r\n") as sock:
        took = closed_within(sock, 10 * READ_TIMEOUT, trickle=b"X-Slow: " + b"a" * 1000)
    assert took is not None, "a client trickling its headers held the connection open"


def test_a_kept_alive_connection_gets_the_same_header_deadline(limited):
    """After a first response, the next request's headers are timed too."""
    _, port = limited
    with raw(port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n") as sock:
        assert read_response(sock)[0] in (200, 503)
        took = closed_within(sock, 10 * READ_TIMEOUT, trickle=b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000)
    assert took is not None


def test_headers_larger_than_64_kib_are_refused(limited):
    """Headers sent fast but without end: 431 once 64 KiB have come, not held in memory until the deadline."""
    http, port = limited
    with raw(port, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ") as sock:
        with contextlib.suppress(OSError):  # the server may close while this is still sending
            for _ in range(16):
                sock.sendall(b"a" * 16384)
        status, headers, body = read_response(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    message = "request line and headers are larger than 65536 bytes"
    feast_keys = {"detail": message, "module": "feast.errors", "class": "FeastError", "message": message}
    assert httpx.Response(431, content=body).json() == feast_keys  # the server's error shape, as every error
    assert http.get("/health").status_code == 200


def test_a_slow_body_is_answered_408(limited):
    """Headers complete, the body stalls: a JSON 408 after --read-timeout, then the connection closes."""
    http, port = limited
    head = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with raw(port, head + b'{"features"') as sock:
        status, headers, body = read_response(sock)
        assert status == 408 and headers["content-type"] == "application/json"
        error = httpx.Response(408, content=body).json()
        assert "did not arrive within 1 s" in error["detail"] and error["message"] == error["detail"]
        assert closed_within(sock, 5) is not None
    assert errors_counted(http)[("/get-online-features", "body_timeout")] >= 1


# -- errors ------------------------------------------------------------------------------------


def test_a_stored_value_that_does_not_decode_is_a_counted_json_500(limited):
    """Not the client's fault (it was a 400): a JSON 500 naming the view, counted by kind."""
    http, _ = limited
    before = errors_counted(http).get(("/get-online-features", "StoredValueError"), 0)
    response = http.post("/get-online-features", json={"features": ["fv_user:amount"], "entities": {"user_id": ["corrupt"]}})
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert "feature view 'fv_user'" in detail and "does not fit its layout" in detail and "Traceback" not in detail
    assert errors_counted(http)[("/get-online-features", "StoredValueError")] == before + 1
    codes = re.findall(
        r'^featsync_requests_total\{code="500",endpoint="/get-online-features"\} (\S+)$', http.get("/metrics").text, re.M
    )
    assert codes and float(codes[0]) >= 1
    assert http.get("/health").status_code == 200  # the worker is still serving


@pytest.fixture
def uvicorn_server():
    """A real uvicorn server in a thread, for an app of the test's own; yields (start(app) -> base URL)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        protocol = functools.partial(ReadDeadlineProtocol, read_timeout=READ_TIMEOUT)
        config = uvicorn.Config(app, http=protocol, loop="asyncio", log_level="critical", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        for _ in range(200):
            if server.started:
                return f"http://127.0.0.1:{port}"
            time.sleep(0.02)
        raise RuntimeError("uvicorn did not start")

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_a_431_logs_its_own_line_not_uvicorn_s_invalid_request_warning(uvicorn_server):
    """Headers over 64 KiB in one read are refused from a parser callback, which uvicorn took for
    a malformed request and logged "Invalid HTTP request received." as a warning: the 431 logs
    one line of its own naming the limit; a malformed request still gets uvicorn's warning."""
    import logging

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(f"{record.levelname} {record.getMessage()}")

    async def health(request):
        return JSONResponse({"status": "ok"})

    base = uvicorn_server(Starlette(routes=[Route("/health", health)]))
    port = int(base.rsplit(":", 1)[1])
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "featsync.server")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
        lg.setLevel(logging.INFO)
    try:
        with raw(port, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n") as sock:
            assert read_response(sock)[0] == 431
        assert records.messages == ["INFO refused a request whose line and headers are over 65536 bytes (431)"]
        with raw(port, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Bad\x01: a\r\n\r\n") as sock:
            assert read_response(sock)[0] == 400
        assert records.messages[1:] == ["WARNING Invalid HTTP request received."]
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(records)
            lg.setLevel(level)


def test_an_unexpected_exception_is_a_counted_json_500(uvicorn_server, monkeypatch):
    """Any exception an endpoint lets through: JSON (not Starlette's text/plain), counted once."""

    async def boom(request):
        raise ZeroDivisionError("the bug")

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()  # this process's own registry
    app = Starlette(routes=[Route("/boom", boom)], exception_handlers={Exception: server_error_handler(error)})
    wrapped = guard(
        app,
        max_body_bytes=MAX_BODY,
        error=error,
        count_error=metrics.count_error,
        observe=metrics.observe,
        endpoints=["/boom"],
    )
    base = uvicorn_server(wrapped)
    for _ in range(2):
        response = httpx.get(f"{base}/boom", timeout=10)
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert response.json()["detail"] == "internal server error (ZeroDivisionError); the server's log has the details"
    # Counted by the guard once Starlette has sent the 500 and re-raised: a moment after the reply.
    deadline = time.monotonic() + 10
    while 'code="500",endpoint="/boom"} 2.0' not in (text := metrics.exposition().decode()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 'featsync_errors_total{endpoint="/boom",kind="ZeroDivisionError"} 2.0' in text
    assert 'featsync_requests_total{code="500",endpoint="/boom"} 2.0' in text
    assert httpx.get(f"{base}/elsewhere/{uuid.uuid4().hex}", timeout=10).status_code == 404
    assert "/elsewhere" not in metrics.exposition().decode()  # never a client's raw path as a label


# -- the plan cache ----------------------------------------------------------------------------


def test_huge_distinct_feature_lists_leave_the_plan_cache_small(project, redis_url):  # noqa: F811
    """60 requests of 20,000 references each, all distinct lists: before, every list was kept
    whole as a cache key (a server grew from 170 MB to 779 MB); now duplicates collapse."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-guard-{uuid.uuid4().hex[:8]}"
    load(USERS, PAIRS, PROFILES)
    Pusher(project, client, key_prefix=prefix).push(["fv_user"])
    try:
        reader = OnlineReader(project.registry(), client, prefix)
        reader.get([{"user_id": "u1"}], ["fv_user:amount"])  # first use: imports and caches warm
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for i in range(60):
                # fresh string objects, as a JSON parser makes them; each list differs from the others
                refs = [f"fv_user:{'amount' if j % (i + 2) else 'label'}" for j in range(20_000)]
                response = reader.get([{"user_id": "u1"}], refs)
                assert set(response.features) == {"amount", "label"}
                del refs, response
            grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        finally:
            tracemalloc.stop()
        assert len(reader._plans) <= 3  # [amount, label], [label, amount] and the warm-up's [amount]
        assert grown < 1_000_000, f"60 requests kept {grown} bytes"
    finally:
        delete_pushed_keys(project, client, prefix)


def test_the_plan_cache_is_an_lru_bounded_by_entries_and_references():
    cache = PlanCache(max_entries=3, max_refs=8)
    for i in range(10):
        cache.put(((f"v:f{i}",), None, False), i)
        assert len(cache) <= 3 and cache.refs <= 8
    assert [cache.get(((f"v:f{i}",), None, False)) for i in (7, 8, 9)] == [7, 8, 9]
    cache.get(((("v:f7",)), None, False))  # used: now the most recent
    cache.put((("a", "b", "c", "d"), None, False), "wide")  # 5 references: two entries must go
    assert cache.get((("v:f7",), None, False)) == 7 and cache.get((("v:f8",), None, False)) is None
    assert len(cache) <= 3 and cache.refs <= 8
    cache.put((tuple("abcdefghij"), None, False), "too wide")  # larger than the whole cache: not kept
    assert cache.get((tuple("abcdefghij"), None, False)) is None and cache.refs <= 8


# -- the token and secrets ---------------------------------------------------------------------


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_a_token_file_that_cannot_hold_a_secret_is_refused(project, tmp_path, command):  # noqa: F811
    base = [command, "--project-dir", str(project.project_dir), "--redis-url", "redis://127.0.0.1:1/0"]
    cases = [
        (str(tmp_path / "absent"), "no such file"),
        (token_file(tmp_path, "  \n"), "the file is empty"),
        (token_file(tmp_path, TOKEN, 0o644), "every user can read it"),
        (token_file(tmp_path, "two words"), "one line of printable ASCII characters"),
        # Accepted once, and never matched: a Bearer header is read as latin-1, the token compared as UTF-8.
        (token_file(tmp_path, "jeton-secr\u00e8t"), "one line of printable ASCII characters"),
    ]
    for path, message in cases:
        result = CliRunner().invoke(main, [*base, "--auth-token-file", path])
        assert result.exit_code == 64, result.output
        assert message in result.output and f"--auth-token-file {path}" in result.output
        assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["serve", *base[1:], "--auth-reads"])
    assert result.exit_code == 64 and "--auth-reads needs --auth-token-file" in result.output


def free_port_in(first: int, last: int) -> int:
    """A free loopback port in this test's own range (guard: 7200-7299)."""
    for port in range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            todo += children
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_get_no_secret_in_their_environment(project, tmp_path):  # noqa: F811
    """--workers 2 on a Redis with a password (in FEATSYNC_REDIS_URL), and a token: neither is
    in any worker's environment (they were, as JSON in FEATSYNC_SERVE_CONFIG, and the variable
    was inherited); the workers read both from a mode 0600 file, removed when the server exits.
    Serving and the token check work."""
    port = free_port_in(7200, 7299)
    redis_proc = start_redis(port, tmp_path, "--requirepass", PASSWORD, password=PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    try:
        load(USERS, PAIRS, PROFILES)
        Pusher(project, redis.Redis.from_url(url), key_prefix="guard").push()
        token = token_file(tmp_path, TOKEN + "\n")
        # In the server's own environment: its workers must not inherit it.
        args = ["serve", "--project-dir", str(project.project_dir), "--key-prefix", "guard", "--workers", "2"]
        proc, base = start(args + ["--auth-token-file", token, "--auth-reads"], {**os.environ, "FEATSYNC_REDIS_URL": url})
        try:
            body = {"features": ["fv_user:amount"], "entities": {"user_id": ["u1"]}}
            wait_for_workers(proc.pid, 2)
            for pid in descendants(proc.pid):
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert PASSWORD.encode() not in environ and TOKEN.encode() not in environ, cmd
            config_file = served_config_file(proc.pid)
            assert stat.S_IMODE(config_file.stat().st_mode) == 0o600

            assert httpx.post(f"{base}/get-online-features", json=body, timeout=10).status_code == 401
            wrong = {"authorization": "Bearer nope"}
            assert httpx.post(f"{base}/get-online-features", json=body, headers=wrong, timeout=10).status_code == 401
            good = {"authorization": f"Bearer {TOKEN}"}
            for _ in range(6):  # likely on both workers
                response = httpx.post(f"{base}/get-online-features", json=body, headers=good, timeout=10)
                assert response.status_code == 200, response.text
                assert response.json()["results"][1]["values"] == [2]
            assert httpx.get(f"{base}/health", timeout=10).json()["status"] == "ok"  # probes stay open
        finally:
            stop(proc)
        assert not config_file.exists()
    finally:
        redis_proc.kill()
        redis_proc.wait()


def wait_for_workers(pid: int, n: int) -> list[int]:
    """The worker processes of the server `pid` once `n` are up (uvicorn spawns them after it answers)."""
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while len(workers) < n and time.monotonic() < deadline:
        workers = [p for p in descendants(pid) if b"multiprocessing" in Path(f"/proc/{p}/cmdline").read_bytes()]
        time.sleep(0.2)
    assert len(workers) >= n, descendants(pid)
    return workers


def served_config_file(pid: int) -> Path:
    """The workers' config file of the server `pid`: the one path its processes' environments name."""
    config_files = set()
    for child in descendants(pid):
        for entry in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"FEATSYNC_SERVE_CONFIG_FILE="):
                config_files.add(entry.split(b"=", 1)[1].decode())
    assert len(config_files) == 1, config_files
    return Path(config_files.pop())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sigkilled_server_leaves_no_config_file(project, redis_url, tmp_path):  # noqa: F811
    """SIGKILL of `featsync serve --workers 2` and its workers (no cleanup code runs) leaves no
    copy of the workers' config (the Redis URL, the token) behind: not in the temp folder (it
    was a mkstemp file there, unlinked only on a clean exit), nor where the workers read it."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["serve", "--project-dir", str(project.project_dir), "--redis-url", redis_url, "--workers", "2"]
    args += ["--key-prefix", f"featsync-test-{uuid.uuid4().hex[:8]}", "--auth-token-file", token_file(tmp_path, TOKEN)]
    proc, _ = start(args, {**os.environ, "TMPDIR": str(tmp)})  # TMPDIR: the server's tempfile.gettempdir()
    try:
        wait_for_workers(proc.pid, 2)
        config_file = served_config_file(proc.pid)
        assert config_file.is_file()  # while the server lives
    finally:
        family = descendants(proc.pid)
        proc.kill()  # the server first: it must not get to restart a worker
        proc.wait()
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not config_file.exists()
    assert [p.name for p in tmp.iterdir() if p.name.startswith("featsync-serve-")] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_metrics_dir_of_a_sigkilled_server_is_removed_by_the_next(project, redis_url, tmp_path):  # noqa: F811
    """A SIGKILLed `featsync serve` leaves its prometheus multiprocess directory in the temp folder
    (no cleanup runs); the next server removes it at start-up: only directories named like its
    own whose pid is dead. A live server's, and anything else, stays; a clean exit removes its own."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["serve", "--project-dir", str(project.project_dir), "--redis-url", redis_url, "--workers", "2"]
    args += ["--key-prefix", f"featsync-test-{uuid.uuid4().hex[:8]}"]
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def metrics_dirs() -> set[str]:
        return {p.name for p in tmp.iterdir() if p.name.startswith("featsync-metrics-")}

    proc, _ = start(args, env)
    try:
        wait_for_workers(proc.pid, 2)
        (killed,) = metrics_dirs()
    finally:
        family = descendants(proc.pid)
        proc.kill()
        proc.wait()
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert metrics_dirs() == {killed}  # left behind
    alive, other = f"featsync-metrics-{os.getpid()}-x1", "featsync-metrics-notapid"
    (tmp / alive).mkdir()
    (tmp / other).mkdir()
    proc, _ = start(args, env)
    try:
        (mine,) = metrics_dirs() - {alive, other}
        assert mine != killed and mine.startswith(f"featsync-metrics-{proc.pid}-")
    finally:
        stop(proc)
    assert metrics_dirs() == {alive, other}


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`featsync ARGS` (serve or ui) on a free port of this test's range; returns once it answers /health."""
    port = free_port_in(7200, 7299)
    command = [sys.executable, "-m", "featsync", *args, "--port", str(port), "--log-level", "warning"]
    return launch(command, env, port, 120)


def test_the_ui_takes_its_token_from_the_file(project, tmp_path, redis_url):  # noqa: F811
    """`featsync ui --auth-token-file`: the pages need the file's token (a header or the sign-in cookie)."""
    token = token_file(tmp_path, TOKEN)
    args = ["ui", "--project-dir", str(project.project_dir), "--redis-url", redis_url, "--auth-token-file", token]
    proc, base = start(args, dict(os.environ))
    try:
        assert httpx.get(f"{base}/ui/", timeout=10, headers={"accept": "application/json"}).status_code == 401
        ok = httpx.get(f"{base}/ui/", timeout=10, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    finally:
        stop(proc)


# -- the audit: crashes that must be clear errors ----------------------------------------------


def test_the_example_server_answers_what_it_cannot_serve_in_json(duckdb_build, redis_url):
    """A request time outside years 1..9999 once in UTC was an OverflowError 500 (issue 11); an
    unknown path or a wrong method was Starlette's text/plain; a hand-edited result file broke /metrics."""
    example = duckdb_build.project
    results = result_path(example, "validate")
    saved = results.read_bytes() if results.exists() else None
    proc, base = start_server(example, redis_url, f"featsync-guard-{uuid.uuid4().hex[:8]}", target="dev")
    try:
        entities = {"user_id": ["u0001"], "merchant_id": ["m0001"]}
        for shown in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"):
            request = {"transaction_amount": [1.0], "event_timestamp": [shown]}
            body = {"feature_service": "fraud_detection", "entities": entities, "request_data": request}
            response = httpx.post(f"{base}/get-online-features", json=body, timeout=10)
            assert response.status_code == 400 and response.headers["content-type"] == "application/json"
            assert response.json()["detail"] == (
                f"request field 'event_timestamp': '{shown}' is outside the years 1 to 9999 once converted to UTC"
            )
        wrong_method = httpx.get(f"{base}/get-online-features", timeout=10)
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert wrong_method.json()["detail"] == "Method Not Allowed"
        unknown = httpx.get(f"{base}/nowhere", timeout=10)
        assert unknown.status_code == 404 and unknown.json()["detail"] == "Not Found"

        results.parent.mkdir(parents=True, exist_ok=True)
        view, fv = next(iter(example.registry().feature_views.items()))
        about = {"version": fv.version}
        results.write_text(json.dumps({"views": {view: {"results": 5, "about": about}, "other": "not a result"}}))
        scrape = httpx.get(f"{base}/metrics", timeout=10)
        assert scrape.status_code == 200, scrape.text
        assert f'featsync_feature_view_validation_failures{{feature_view="{view}"}} 0.0' in scrape.text
        assert "featsync_errors_total{" not in scrape.text
    finally:
        stop(proc)
        if saved is None:
            results.unlink(missing_ok=True)
        else:
            results.write_bytes(saved)


def test_a_request_time_outside_the_years_is_a_usage_error_in_get(duckdb_build, redis_url):
    """`featsync get --request`: the same parse, a one-line usage error instead of a traceback."""
    args = ["get", "--project-dir", str(duckdb_build.project.project_dir), "--target", "dev", "--redis-url", redis_url]
    args += ["--key-prefix", f"featsync-guard-{uuid.uuid4().hex[:8]}", "--service", "fraud_detection"]
    args += ["--entity", "user_id=u0001", "--entity", "merchant_id=m0001", "--request", "transaction_amount=1"]
    result = CliRunner().invoke(main, [*args, "--request", "event_timestamp=0001-01-01T00:00:00+05:00"])
    assert result.exit_code in (2, 64), result.output
    assert "outside the years 1 to 9999" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "url, message",
    [("redis://127.0.0.1:abc/0", "the port must be a number"), ("redis://:s3cret@127.0.0.1:6379/abc", "database 'abc'")],
)
def test_serve_refuses_a_malformed_redis_url_before_starting(project, url, message):  # noqa: F811
    """It failed in the worker's start-up with a traceback and exit code 3 (dbt's)."""
    result = CliRunner().invoke(main, ["serve", "--project-dir", str(project.project_dir), "--redis-url", url])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "entities, message",
    [
        (["user_id=u1", "user_id=u2"], "'user_id' is given twice"),
        (["user_id=\udcff"], "is not valid UTF-8 text"),  # a byte of another encoding, as Python decodes argv
    ],
)
def test_get_refuses_an_entity_given_twice_or_not_utf8(project, redis_url, entities, message):  # noqa: F811
    """The second value silently replaced the first; a non-UTF-8 byte was a UnicodeEncodeError traceback."""
    args = ["get", "--project-dir", str(project.project_dir), "--redis-url", redis_url, "--features", "fv_user:amount"]
    args += [f"--entity={entity}" for entity in entities]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 64 and message in result.output, result.output
    assert "Traceback" not in result.output
