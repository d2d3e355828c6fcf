"""What one client may cost the server: body size, read deadlines, and errors that stay JSON.

A feature server listens to clients it does not control. Without limits, one client could
send a 200 MB body (read in full), trickle a request a byte at a time to hold a connection
open for ever (slow loris), or hit a bug that answers a text/plain 500 nobody counts. So:

- `HeaderDeadlineProtocol` (uvicorn's httptools protocol with one more timer): a request's
  headers must arrive within `read_timeout` of the connection opening, or of the previous
  response on a kept-alive connection; else the connection is closed. The app never sees
  such a request: it only runs once the headers are complete, so this must be at the
  protocol level.
- `guard` (ASGI middleware around the app): a declared `Content-Length` above the limit is
  answered 413 before any of the body is read; a chunked body is counted as it arrives and
  refused as soon as it passes the limit; the whole body must arrive within `read_timeout`
  (408 otherwise). The body is read here, once, and handed to the app as one message.
  Any exception the app lets through is answered as a JSON 500 (the server's error shape)
  and counted in `featsync_errors_total` by endpoint and kind; the traceback goes to the
  server's log, once. The JSON 500 itself is the app's (`server_error_handler`, installed
  in Starlette: its ServerErrorMiddleware answers, then re-raises to here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from featsync.errors import FeatsyncError
from featsync.online.auth import authorized, unauthorized

logger = logging.getLogger("featsync.server")

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full --max-batch of 1000 rows of two 100-character keys is ~0.25 MiB
DEFAULT_READ_TIMEOUT = 10.0  # seconds for a request's headers, and again for its body
MAX_HEADER_BYTES = 64 * 1024  # a request line and headers larger than this: 431 (nginx allows 32 KiB by default)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers are too slow.

    The deadline is armed when the connection opens and after each response (the next
    request's headers are awaited from then on), and disarmed when the headers are
    complete. uvicorn's own keep-alive timeout still closes an idle connection sooner; it is
    disarmed by the first byte, which this deadline is not. The bytes received while the
    headers are awaited are counted too: past MAX_HEADER_BYTES, 431 and the connection is
    closed (httptools itself keeps every header byte it is sent).
    """

    def __init__(self, *args: Any, read_timeout: float = DEFAULT_READ_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.header_deadline: asyncio.TimerHandle | None = None
        self.header_bytes = 0

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self.header_bytes = 0
        self.header_deadline = self.loop.call_later(self.read_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_too_slow(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            logger.debug("closing a connection whose request headers took over %s s", self.read_timeout)
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self.header_deadline is None:  # headers complete: a body, handled by `guard`
            super().data_received(data)
            return
        self.header_bytes += len(data)
        super().data_received(data)
        if self.header_deadline is not None and self.header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            body = b'{"detail":"request line and headers are larger than %d bytes"}' % MAX_HEADER_BYTES
            head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            self.transport.write(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a next request whose headers are already in: nothing to await
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)


class BodyDeadlines:
    """The body deadlines of one worker: one timer sweeps them all, a few times a second.

    `asyncio.timeout` around each read would cost ~14 us a request (a timer scheduled and
    cancelled every time: more than the rest of the middleware); a request here only puts
    its task in a dict and takes it out. The sweep cancels a task past its deadline, which
    the reader tells from any other cancellation by `expired`.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.reading: dict[asyncio.Task, float] = {}
        self.expired: set[asyncio.Task] = set()
        self._armed: asyncio.AbstractEventLoop | None = None  # the loop whose timer sweeps

    def watch(self, task: asyncio.Task, deadline: float) -> None:
        self.reading[task] = deadline
        loop = task.get_loop()
        if self._armed is not loop:  # idle, or an app used from another loop (tests)
            self._armed = loop
            loop.call_later(self.interval, self._sweep, loop)

    def unwatch(self, task: asyncio.Task) -> None:
        self.reading.pop(task, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._armed is not loop:
            return  # superseded by another loop's timer
        now = time.monotonic()
        for task, deadline in list(self.reading.items()):
            if deadline <= now and task.get_loop() is loop:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()
        if self.reading:
            loop.call_later(self.interval, self._sweep, loop)
        else:
            self._armed = None  # idle: no timer until the next read


class _Refused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def guard(
    app: Any,
    *,
    max_body_bytes: int,
    read_timeout: float,
    error: Callable[[int, str], Any],
    count_error: Callable[[str, str], None],
    observe: Callable[[str, int, float], None],
    endpoints: Iterable[str],
    token: str | None = None,
    token_paths: Iterable[str] = (),
) -> Any:
    """Wrap an ASGI app with the body limit, the body deadline, the bearer token of
    `token_paths` and JSON 500s (see the module docstring).

    `error(status, message)` builds the server's JSON error response; `count_error(endpoint,
    kind)` counts a refusal or a failure; `observe(endpoint, status, seconds)` records a
    response the app itself never gave (its endpoints observe their own). Endpoint labels
    are the known `endpoints`, `/ui` for the pages, else `other`: never a client's raw path.
    """
    known = frozenset(endpoints)
    deadlines = BodyDeadlines(min(read_timeout / 4, 0.25))
    guarded = frozenset(token_paths) if token else frozenset()

    def endpoint_of(path: str) -> str:
        if path in known:
            return path
        return "/ui" if path == "/ui" or path.startswith("/ui/") else "other"

    def declared_too_large(scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value) > max_body_bytes
                except ValueError:
                    raise _Refused(400, "bad_content_length", "Content-Length is not a number") from None
        return False

    async def read_body(receive: Any, started: float) -> dict:
        """The request's whole body as one `http.request` message, within the size and the
        deadline (the first message usually is the whole body: then it is returned as is)."""
        task = asyncio.current_task()
        assert task is not None
        deadlines.watch(task, started + read_timeout)
        try:
            message = await receive()
            if not message.get("more_body", False) or message["type"] != "http.request":
                if len(message.get("body", b"")) > max_body_bytes:
                    raise _Refused(413, "body_too_large", body_too_large(max_body_bytes))
                return message
            chunks, size = [], 0
            while True:
                if message["type"] != "http.request":
                    return message  # the client went away
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_body_bytes:
                    raise _Refused(413, "body_too_large", body_too_large(max_body_bytes))
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                message = await receive()
        except asyncio.CancelledError:
            if task not in deadlines.expired:
                raise
            deadlines.expired.discard(task)
            task.uncancel()
            raise _Refused(408, "body_timeout", f"the request body did not arrive within {read_timeout:g} s") from None
        finally:
            deadlines.unwatch(task)

    async def guarded_app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.monotonic()
        try:
            if guarded and scope["path"] in guarded and not authorized(scope, token):
                endpoint = endpoint_of(scope["path"])
                count_error(endpoint, "unauthorized")
                observe(endpoint, 401, time.monotonic() - started)
                await unauthorized()(scope, receive, send)
                return
            if declared_too_large(scope):
                raise _Refused(413, "body_too_large", body_too_large(max_body_bytes))
            first: dict | None = await read_body(receive, started)
            if first["type"] != "http.request":
                return  # disconnected before the body arrived: nobody to answer

            async def replay() -> dict:
                nonlocal first
                if first is not None:
                    message, first = first, None
                    return message
                return await receive()  # only a disconnect can come now

            await app(scope, replay, send)
        except _Refused as refused:
            endpoint = endpoint_of(scope["path"])
            count_error(endpoint, refused.kind)
            observe(endpoint, refused.status, time.monotonic() - started)
            response = error(refused.status, refused.message)
            response.headers["connection"] = "close"  # the rest of the body is not read
            await response(scope, receive, send)
        except Exception as exc:
            # The app answered already: Starlette's ServerErrorMiddleware sends the response
            # of server_error_handler (a JSON 500), then re-raises for the server to see.
            endpoint, kind = endpoint_of(scope["path"]), type(exc).__name__
            count_error(endpoint, kind)
            observe(endpoint, 500, time.monotonic() - started)  # the endpoint raised: it observed nothing
            logger.error("%s %s failed: %s: %s", scope.get("method"), endpoint, kind, exc, exc_info=exc)

    return guarded_app


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


def body_too_large(limit: int) -> str:
    return f"request body is larger than the server's maximum of {limit} bytes"


def internal_error(exc: BaseException) -> str:
    """The client's view of a failure: featsync's own message (it names what, never a stored
    value), else only the kind; never a traceback."""
    if isinstance(exc, FeatsyncError):
        return f"internal server error: {exc}"
    return f"internal server error ({type(exc).__name__}); the server's log has the details"
