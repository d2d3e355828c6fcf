"""What one client may cost the server: body size, read deadlines, and errors that stay JSON.

A feature server listens to clients it does not control. Without limits, one client could
send a 200 MB body (read in full), trickle a request a byte at a time to hold a connection
open for ever (slow loris), or hit a bug that answers a text/plain 500 nobody counts. So:

- `ReadDeadlineProtocol` (uvicorn's httptools protocol with read deadlines): a request's
  headers must arrive within `read_timeout` of the connection opening, or of the previous
  response on a kept-alive connection, else the connection is closed; its body must then
  arrive within `read_timeout` of the headers, else a JSON 408 and the connection is
  closed. Headers past MAX_HEADER_BYTES, however they arrive: a JSON 431; a request
  httptools cannot parse: a JSON 400 (uvicorn's own is text/plain). This is at the
  protocol level because the app only runs once the headers are complete. The deadlines
  cost a request two attribute writes: one timer per worker (`ReadDeadlines`) sweeps every
  connection a few times a second, instead of a timer scheduled and cancelled per request
  (`call_later` cost more than all the rest of the limits together).
- `guard` (ASGI middleware around the app): the bearer token of the paths that need one
  (401) and a JSON content type on the write endpoints (415, against cross-site POSTs) are
  checked from the headers, before any of the body is read; a declared `Content-Length`
  above the limit is answered 413 unread; a chunked body (of a POST: no route reads any
  other) is counted as it arrives and refused as soon as it passes the limit. A body the
  protocol timed out is counted here.
  Any exception the app lets through is answered as a JSON 500 (the server's error shape)
  and counted in `featsync_errors_total` by endpoint and kind; the traceback goes to the
  server's log, once. The JSON 500 itself is the app's (`server_error_handler`, installed
  in Starlette: its ServerErrorMiddleware answers, then re-raises to here).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httptools
import orjson
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from featsync.errors import FeatsyncError
from featsync.online.auth import authorized, unauthorized

logger = logging.getLogger("featsync.server")

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full --max-batch of 1000 rows of two 100-character keys is ~0.25 MiB
DEFAULT_READ_TIMEOUT = 10.0  # seconds for a request's headers, and again for its body
MAX_HEADER_BYTES = 64 * 1024  # a request line and headers larger than this: 431 (nginx allows 32 KiB by default)
BODY_TIMED_OUT = "featsync.body_timed_out"  # set in a request's scope when the protocol answered it 408
HEADERS, BODY = "headers", "body"  # what a connection is waiting for from its client
HEADERS_TOO_LARGE = f"request line and headers are larger than {MAX_HEADER_BYTES} bytes"


class HeadersTooLarge(Exception):
    """Raised in httptools' callback for complete headers over MAX_HEADER_BYTES: answered 431."""


def error_body(message: str, feast_class: str = "FeastError") -> bytes:
    """The server's error body, for curl users (`detail`) and for Feast clients: Feast's server
    answers {"module", "class", "message"} (FeastError.to_error_detail), which
    FeastError.from_error_detail turns back into the typed exception."""
    return orjson.dumps({"detail": message, "module": "feast.errors", "class": feast_class, "message": message})


def closing_response(status: int, reason: str, message: str) -> bytes:
    """A whole JSON error response that closes the connection, written by the protocol itself
    (before or instead of the app)."""
    body = error_body(message)
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, reason.encode(), len(body)) + body


class ReadDeadlines:
    """The read deadlines of one event loop's connections: one timer checks them all.

    A connection registers once, when it opens; a request then only stamps what its
    connection waits for and since when. Every `interval` seconds (while any connection is
    open) the sweep asks each connection to check its deadline, so one is enforced between
    `read_timeout` and `read_timeout + interval` after it started.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.connections: set[ReadDeadlineProtocol] = set()
        self.timer: asyncio.TimerHandle | None = None  # (the loop is not kept: `_deadlines` is keyed by it, weakly)

    def add(self, connection: ReadDeadlineProtocol) -> None:
        self.connections.add(connection)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.interval, self._sweep)

    def discard(self, connection: ReadDeadlineProtocol) -> None:
        self.connections.discard(connection)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            connection.check_deadline(now)
        self.timer = loop.call_later(self.interval, self._sweep) if self.connections else None


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadDeadlines] = weakref.WeakKeyDictionary()


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose client is too slow to send a request.

    `awaiting` is what the client owes and `since` when that started: HEADERS from the
    connection's opening and after each response (uvicorn's own keep-alive timeout still
    closes an idle connection sooner; it is disarmed by the first byte, which this deadline
    is not), BODY from the headers' end until the request is complete (uvicorn's cycle
    says when: `more_body`). The bytes received while the headers are awaited are counted
    too: past MAX_HEADER_BYTES, 431 and the connection is closed (httptools itself keeps
    every header byte it is sent).
    """

    def __init__(self, *args: Any, read_timeout: float = DEFAULT_READ_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.awaiting = HEADERS
        self.since = 0.0
        self.header_bytes = 0
        self.headers_too_large = False  # set before raising HeadersTooLarge: see _QuietOn431
        self.deadlines: ReadDeadlines | None = None
        self.logger = _QuietOn431(self.logger, self)  # type: ignore[assignment]

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.since = self.loop.time()
        self.deadlines = _deadlines.get(self.loop)
        if self.deadlines is None:
            self.deadlines = _deadlines[self.loop] = ReadDeadlines(min(self.read_timeout / 4, 0.25))
        self.deadlines.add(self)

    def data_received(self, data: bytes) -> None:
        if self.awaiting is not HEADERS:
            super().data_received(data)
            return
        self.header_bytes += len(data)
        super().data_received(data)
        if self.awaiting is HEADERS and self.header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._refuse_headers()

    def on_headers_complete(self) -> None:
        # Headers that came whole within reads of over MAX_HEADER_BYTES (one read can hold them
        # all, and a body): measured here, the only place that sees them complete. A common
        # request's reads are far smaller, so it pays one comparison.
        if self.header_bytes > MAX_HEADER_BYTES and self._header_size() > MAX_HEADER_BYTES:
            self.headers_too_large = True
            raise HeadersTooLarge  # httptools wraps it in a parser error: uvicorn calls send_400_response
        self.awaiting, self.since = BODY, self.loop.time()
        super().on_headers_complete()

    def _header_size(self) -> int:
        """The request line and headers of the request being parsed, in bytes (as sent, give or
        take the request line's spaces and version)."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse (bad framing: Content-Length and
        Transfer-Encoding both, a negative or repeated length, a body without either, which
        then reads as a malformed next request), in the server's JSON error shape instead of
        uvicorn's text/plain; or the 431 of headers too large (`on_headers_complete`). Called by
        uvicorn's `data_received` inside its `except httptools.HttpParserError`, so the
        parser's own reason is the exception being handled."""
        if self.headers_too_large:
            self._refuse_headers()
            return
        exc = sys.exc_info()[1]
        known = exc is not None and not isinstance(exc, httptools.HttpParserCallbackError)
        self._refuse(400, "Bad Request", f"the request is not valid HTTP/1.1: {exc}" if known else msg)

    def _refuse_headers(self) -> None:
        if not self.transport.is_closing():
            logger.info("refused a request whose line and headers are over %s bytes (431)", MAX_HEADER_BYTES)
        self._refuse(431, "Request Header Fields Too Large", HEADERS_TOO_LARGE)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(closing_response(status, reason, message))
            self.transport.close()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a next request whose headers are already in: nothing to await
        super().on_response_complete()
        if not pipelined:
            self.awaiting, self.since, self.header_bytes = HEADERS, self.loop.time(), 0

    def check_deadline(self, now: float) -> None:
        """Called by the sweep: close the connection if what its client owes is late."""
        if now - self.since <= self.read_timeout or self.transport.is_closing():
            return
        if self.awaiting is HEADERS:
            logger.debug("closing a connection whose request headers took over %s s", self.read_timeout)
            self.transport.close()
            return
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return  # the request is in: the app's time is not the client's
        if not cycle.response_started and not self.pipeline:  # (a queued request: a response may be under way)
            cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]  # counted by `guard`
            cycle.disconnected = True  # the app's receive now gets http.disconnect; nothing it sends is written
            cycle.message_event.set()
            message = f"the request body did not arrive within {self.read_timeout:g} s"
            self.transport.write(closing_response(408, "Request Timeout", message))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadlines is not None:
            self.deadlines.discard(self)
        super().connection_lost(exc)


class _QuietOn431:
    """uvicorn's logger of one connection, less its "Invalid HTTP request received." warning for
    headers too large: uvicorn logs it for any parser error, and HeadersTooLarge reaches it as
    one (raised in a parser callback), though the request was valid and featsync answers 431,
    logging that itself (`_refuse_headers`). Everything else goes to uvicorn's logger as is."""

    def __init__(self, logger: logging.Logger, protocol: ReadDeadlineProtocol) -> None:
        self._logger = logger
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._protocol.headers_too_large:
            self._logger.warning(msg, *args, **kwargs)


class _Refused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def guard(
    app: Any,
    *,
    max_body_bytes: int,
    error: Callable[[int, str], Any],
    count_error: Callable[[str, str], None],
    observe: Callable[[str, int, float], None],
    endpoints: Iterable[str],
    token: str | None = None,
    token_paths: Iterable[str] = (),
    json_paths: Iterable[str] = (),
) -> Any:
    """Wrap an ASGI app with the body limit, the bearer token of `token_paths`, the JSON-only
    POSTs of `json_paths`, JSON 500s and the count of bodies the protocol timed out (see the
    module docstring).

    The token and the content type are checked from the headers alone, before a byte of the
    body is read: an unauthorized client costs no memory, whatever body it announces.

    `error(status, message)` builds the server's JSON error response; `count_error(endpoint,
    kind)` counts a refusal or a failure; `observe(endpoint, status, seconds)` records a
    response the app itself never gave (its endpoints observe their own). Endpoint labels
    are the known `endpoints`, `/ui` for the pages, else `other`: never a client's raw path.

    A request with a `Content-Length` goes to the app as it came (httptools reads no more
    than the declared length); only a chunked body is read here first, to count it.
    """
    known = frozenset(endpoints)
    # What each checked path needs: (the token, a JSON body); one dict lookup per request.
    rules: dict[str, tuple[bool, bool]] = {path: (False, True) for path in json_paths}
    for path in token_paths if token else ():
        rules[path] = (True, rules.get(path, (False, False))[1])
    too_large = body_too_large(max_body_bytes)

    def endpoint_of(path: str) -> str:
        if path in known:
            return path
        return "/ui" if path == "/ui" or path.startswith("/ui/") else "other"

    def chunked(scope: dict) -> bool:
        """Whether the body must be counted as it comes; a declared length over the limit: 413."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise _Refused(400, "bad_content_length", "Content-Length is not a number") from None
                if length > max_body_bytes:
                    raise _Refused(413, "body_too_large", too_large)
                return False
            if name == b"transfer-encoding":
                return True
        return False

    async def read_chunked(receive: Any) -> dict:
        """A chunked body as one `http.request` message, refused once past the limit (or the
        disconnect that ended it: the client left, or the protocol timed the body out)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body_bytes:
                raise _Refused(413, "body_too_large", too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    def refuse(scope: dict, status: int, kind: str, started: float) -> str:
        endpoint = endpoint_of(scope["path"])
        count_error(endpoint, kind)
        observe(endpoint, status, time.perf_counter() - started)
        return endpoint

    async def guarded_app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            rule = rules.get(scope["path"])
            if rule is not None:
                needs_token, needs_json = rule
                if needs_token and not authorized(scope, token):
                    refuse(scope, 401, "unauthorized", started)
                    response = unauthorized()
                    response.headers["connection"] = "close"  # its body is not read
                    await response(scope, receive, send)
                    return
                if needs_json and scope["method"] == "POST" and not json_body(scope):
                    raise _Refused(415, "unsupported_media_type", NOT_JSON)
            if chunked(scope) and scope["method"] == "POST":  # (no route reads the body of anything else)
                first: dict | None = await read_chunked(receive)
                if first["type"] != "http.request":
                    raise ClientDisconnect  # (counted below if the body timed out)

                async def replay() -> dict:
                    nonlocal first
                    if first is not None:
                        message, first = first, None
                        return message
                    return await receive()  # only a disconnect can come now

                receive = replay
            await app(scope, receive, send)
        except _Refused as refused:
            refuse(scope, refused.status, refused.kind, started)
            response = error(refused.status, refused.message)
            response.headers["connection"] = "close"  # the rest of the body is not read
            await response(scope, receive, send)
            return
        except ClientDisconnect:
            pass  # the client left, or its body was late (below): nobody to answer either way
        except Exception as exc:
            # The app answered already: Starlette's ServerErrorMiddleware sends the response
            # of server_error_handler (a JSON 500), then re-raises for the server to see.
            kind = type(exc).__name__
            endpoint = refuse(scope, 500, kind, started)  # the endpoint raised: it observed nothing
            logger.error("%s %s failed: %s: %s", scope.get("method"), endpoint, kind, exc, exc_info=exc)
            return
        if BODY_TIMED_OUT in scope:  # the protocol answered 408 (ReadDeadlineProtocol.check_deadline)
            refuse(scope, 408, "body_timeout", started)

    return guarded_app


def direct_post(app: Any, path: str, answer: Callable[[bytes], Awaitable[tuple[int, bytes]]]) -> Any:
    """`app`, with POSTs to `path` answered by `answer(body) -> (status, JSON)` directly.

    Why: the hot path's own work (parse, plan, MGET, decode, JSON) is about as much CPU as
    Starlette's layers around it (its error and exception middleware, the router's match of
    every route, Request and Response objects). The route stays in `app` for the OpenAPI
    schema and for other methods (405). An exception in `answer` gets the JSON 500 that
    Starlette's server-error handler gives, then goes up to `guard`, which counts and logs it.
    """

    async def direct(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != path or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body", False):  # the body came in pieces (uvicorn: one per read)
            pieces = [body]
            while message.get("more_body", False):
                message = await receive()
                pieces.append(message.get("body", b""))
            body = b"".join(pieces)
        if message["type"] != "http.request":
            raise ClientDisconnect  # the client left (or the protocol timed its body out): see guard
        try:
            status, json = await answer(body)
        except Exception as exc:
            await _send_json(send, 500, error_body(internal_error(exc)))
            raise
        await _send_json(send, status, json)

    return direct


async def _send_json(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def server_error_handler(error: Callable[[int, str], Any]) -> Callable[[Any, Exception], Any]:
    """Starlette's 500 handler (`exception_handlers={Exception: ...}`): the server's JSON error
    shape instead of Starlette's text/plain. Starlette then re-raises, and `guard` counts it."""

    async def server_error(request: Any, exc: Exception) -> Any:
        return error(500, internal_error(exc))

    return server_error


def http_error_handler(error: Callable[[int, str], Any]) -> Callable[[Any, Exception], Any]:
    """Starlette's HTTPException handler (an unknown path: 404, a wrong method: 405): the
    server's JSON error shape too, its headers (Allow) kept."""

    async def http_error(request: Any, exc: Any) -> Any:
        response = error(exc.status_code, exc.detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    return http_error


NOT_JSON = "the request body must be JSON, sent with 'Content-Type: application/json'"


def json_body(scope: dict) -> bool:
    """Whether a request declares a JSON body: `Content-Type: application/json`, parameters
    (charset) allowed. A browser sends a cross-site POST without asking the server first
    (a CORS preflight) only as text/plain, a form or multipart, or with no type (a Blob
    body): requiring JSON keeps every web page from writing to a server without a token."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


def body_too_large(limit: int) -> str:
    return f"request body is larger than the server's maximum of {limit} bytes"


def internal_error(exc: BaseException) -> str:
    """The client's view of a failure: featsync's own message (it names what, never a stored
    value), else only the kind; never a traceback."""
    if isinstance(exc, FeatsyncError):
        return f"internal server error: {exc}"
    return f"internal server error ({type(exc).__name__}); the server's log has the details"
