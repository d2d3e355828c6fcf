"""The write endpoints of `featsync serve`, in Feast's request shapes: POST /push and
POST /write-to-online-store.

    POST /push                   {"push_source_name": VIEW, "df": {column: [values]}, "to": "online"}
    POST /write-to-online-store  {"feature_view_name": VIEW, "df": {column: [values]}}

`push_source_name` is the feature view's name (featsync has no separate push sources: a view
is its own push source); `to` is "online" (default), "offline" or "online_and_offline".
Feast's `allow_registry_cache` and `transform_on_write` are accepted and ignored (the
registry is loaded once per worker; featsync has no write-time transformations).

Both go through the same code as FeatureStore.push (featsync.online.ingest: every row
checked before anything is written; featsync.online.push: the batch push's encoding, expiry
and newest-wins script), on the worker's asyncio Redis client; a small request of plain
rows (at most featsync.online.row_push.SMALL_ROWS, online only, not on a Redis Cluster)
is typed and encoded row by row by featsync.online.row_push, into the same writes. Both
require the server's bearer token when one is configured, and a body sent as
`Content-Type: application/json`: the server's guard checks both before reading the body
(featsync.online.limits.guard, on WRITE_PATHS).

Answers: 200 {"feature_view", "rows", "written", "stale", "expired", "superseded", "offline"}
(written + stale + expired + superseded = rows when `to` includes online); 400 a
malformed request; 401 no or a wrong token; 404 an unknown view; 413 more rows than the
server's --max-batch; 415 a body not sent as JSON; 422 rows that do not fit the view (the
message names the row and column); 409 a key of the view in Redis holds something featsync
did not write (a value not of the view's layout at an entity key, or a state key that is not
a hash): the message names the key, and nothing of that write was done; retrying cannot help
until the key is deleted or restored; 503 Redis unreachable. A view's state hash that breaks
after its rows were written (its newest_event_time cannot be raised) does not fail the
request: the rows are online, so the answer is 200; the server logs the error and counts it
in featsync_errors_total{kind="state_hash"}, and the view's freshness shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from featsync.errors import FeatsyncError, NotFoundError
from featsync.online.ingest import RowIngest
from featsync.online.push import WRITE_NEWER, ForeignValueError, PushedRows, refused, write_newer_async
from featsync.online.row_push import SmallRows
from featsync.online.rows import TO_ONLINE, PushRowsError
from featsync.online.state import RAISE_NEWEST, StateKeyError, own_async, raise_newest_call, state_error
from featsync.project import Project

PUSH_FIELDS = {"push_source_name", "df", "to", "allow_registry_cache", "transform_on_write"}
WRITE_FIELDS = {"feature_view_name", "df", "allow_registry_cache", "transform_on_write"}
WRITE_PATHS = ["/push", "/write-to-online-store"]  # the guard requires the token and JSON on these
T = TypeVar("T")
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError)
log = logging.getLogger(__name__)


class BadRequest(FeatsyncError):
    """A request that is not of the endpoint's shape: 400."""


class TooMany(FeatsyncError):
    """More rows than the server's maximum batch: 413."""


def parse_push(body: bytes, fields: set[str], name_field: str, max_rows: int) -> tuple[str, dict[str, list[Any]], str]:
    """(view name, columns, to) of a request body, each problem a BadRequest naming the field."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(payload.keys() - fields)
    if unknown:
        raise BadRequest(f"unknown request field(s): {', '.join(unknown)} (expected: {', '.join(sorted(fields))})")
    name = payload.get(name_field)
    if not isinstance(name, str) or not name:
        raise BadRequest(f"'{name_field}' must name a feature view")
    df = payload.get("df")
    if not isinstance(df, dict) or not df or not all(isinstance(v, list) for v in df.values()):
        raise BadRequest("'df' must be an object of columns: {column: [value, ...]}")
    rows = max(len(v) for v in df.values())
    if rows > max_rows:
        raise TooMany(f"'df' has {rows} rows; the server's maximum batch is {max_rows} rows (featsync serve --max-batch)")
    to = payload.get("to", TO_ONLINE)
    if not isinstance(to, str):
        raise BadRequest("'to' must be a string: online, offline or online_and_offline")
    return name, df, to


def routes(
    project: Project,
    client: Callable[[], Any],
    key_prefix: str | None,
    max_rows: int,
    observe: Callable[[str, int, float], None] | None = None,
    timeout: float | None = None,
    error: Callable[[int, str], Response] | None = None,
    lean: Callable[[], Any] | None = None,
    count_error: Callable[[str, str], None] | None = None,
) -> list[Route]:
    """The write routes of one worker, behind the server's guard (the token, JSON: see the
    module docstring); `client` returns the worker's asyncio Redis client, whose
    sockets have no timeout (see AsyncOnlineReader): `timeout` bounds each write instead.
    `error` builds the server's error body (Feast's keys and `detail`), as for every endpoint.
    `lean` returns the worker's AsyncMget (None for TLS and cluster URLs): a small request's
    one script call goes through it, as reads do. `count_error(endpoint, kind)` counts a state
    hash that broke after the rows were written (featsync_errors_total)."""
    _error = error or _plain_error
    ingest = RowIngest(project, None, key_prefix)
    owned: set[str] = set()
    loaded: set[str] = set()  # views whose suite is loaded (in a thread: GX takes seconds to import)
    shas: dict[str, str] = {}  # script text -> its SHA1, once loaded into this worker's Redis

    async def scripted(text: str, call: Callable[[str], Awaitable[T]]) -> T:
        """`call` with the SHA1 of a script (WRITE_NEWER, RAISE_NEWEST) loaded into Redis, so its
        text crosses the wire once per worker; when Redis has forgotten it (NOSCRIPT: SCRIPT
        FLUSH, a restart), load it again and call once more (every write is idempotent). The load
        is bounded by `timeout` as the writes are: a Redis that does not answer is a 503."""
        for attempt in range(2):
            if text not in shas:
                async with asyncio.timeout(timeout):
                    sha = await client().script_load(text)
                shas[text] = sha.decode() if isinstance(sha, bytes) else sha
            try:
                return await call(shas[text])
            except redis.exceptions.NoScriptError:
                shas.pop(text, None)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def write_online(view: Any, pushed: PushedRows, endpoint: str) -> tuple[int, int, int, int]:
        if pushed.rows is None:
            return 0, 0, pushed.expired, pushed.superseded
        layout = ingest.layout(view)
        redis_client = client()
        if layout.view_id not in owned:
            async with asyncio.timeout(timeout):  # the first write of a view per worker: bounded as the writes
                await own_async(redis_client, layout)
            owned.add(layout.view_id)
        fast = lean() if lean is not None and isinstance(pushed.rows, SmallRows) else None

        async def write(sha: str) -> tuple[int, int]:
            try:
                if fast is not None:  # bounded by the lean client's own read timeout
                    return await write_newer_async(redis_client, sha, pushed.rows, lean=fast)
                async with asyncio.timeout(timeout):
                    return await write_newer_async(redis_client, sha, pushed.rows)
            except redis.exceptions.NoScriptError:
                raise  # (scripted loads it again)
            except redis.ResponseError as exc:
                error = refused(exc)
                if isinstance(error, ForeignValueError):  # nothing of that call written: a 409 naming the key
                    raise error from None
                raise  # Redis refused the write otherwise (OOM, NOPERM...): 503

        written, stale = await scripted(WRITE_NEWER, write)
        # The view's newest_event_time only once every row is online (as Pusher.write_pushed):
        # a write that failed raises nothing.
        call = raise_newest_call(layout, pushed.newest_event)
        if call is not None:

            async def raise_newest(sha: str) -> None:
                async with asyncio.timeout(timeout):
                    await redis_client.execute_command("EVALSHA", sha, *call)

            try:
                await scripted(RAISE_NEWEST, raise_newest)
            except redis.exceptions.NoScriptError:
                raise
            except redis.ResponseError as exc:  # the rows are online: say so, and report the state
                log.error("%s; the rows of this request were written", state_error(layout, exc))
                if count_error is not None:
                    count_error(endpoint, "state_hash")
        return written, stale, pushed.expired, pushed.superseded

    async def handle(request: Request, endpoint: str, fields: set[str], name_field: str, fixed_to: str | None) -> Response:
        start = time.perf_counter()
        try:
            name, df, to = parse_push(await request.body(), fields, name_field, max_rows)
            to = fixed_to or to
            if name not in loaded:
                view = ingest.view(name)
                await run_in_threadpool(ingest.checks, view)
                loaded.add(name)
            # Everything that can refuse the request first (a 4xx writes nothing); a small
            # request of plain rows row by row (featsync.online.row_push), not on a cluster.
            cluster = isinstance(client(), redis.asyncio.RedisCluster)
            checked = ingest.check(name, df, to, datetime.now(UTC), small=not cluster)
            view = checked.view
            offline = None
            written = stale = expired = superseded = 0
            if checked.destination.offline and checked.rows:
                offline = await run_in_threadpool(ingest.log_offline, view, checked.table)
            if checked.online is not None:
                written, stale, expired, superseded = await write_online(view, checked.online, endpoint)
            body = {
                "feature_view": view.name,
                "rows": checked.rows,
                "written": written,
                "stale": stale,
                "expired": expired,
                "superseded": superseded,
                "offline": offline,
            }
            result = Response(orjson.dumps(body), media_type="application/json")
        except TooMany as exc:
            result = _error(413, str(exc))
        except NotFoundError as exc:
            result = _error(404, str(exc))
        except PushRowsError as exc:
            result = _error(422, str(exc))
        except (ForeignValueError, StateKeyError) as exc:  # something else wrote at a featsync key
            result = _error(409, str(exc))
        except REDIS_DOWN as exc:
            result = _error(503, f"the online store is unreachable: {exc or 'no answer within ' + str(timeout) + ' s'}")
        except redis.RedisError as exc:
            result = _error(503, f"Redis refused the write: {exc}")
        except FeatsyncError as exc:
            result = _error(400, str(exc))
        if observe is not None:
            observe(endpoint, result.status_code, time.perf_counter() - start)
        return result

    async def push(request: Request) -> Response:
        """
        summary: Write rows of a feature view online and/or to its offline push log (Feast's /push)
        responses:
          200: {description: 'Counts of rows written, stale (older than stored), expired and superseded (beaten in the request).'}
          400: {description: Malformed request.}
          401: {description: Missing or wrong bearer token.}
          404: {description: Unknown feature view.}
          413: {description: More rows than the maximum batch.}
          415: {description: 'The body is not sent as Content-Type: application/json.'}
          422: {description: 'Rows that do not fit the view: the message names the row and column; nothing was written.'}
          409: {description: 'A key of the view holds what featsync did not write: the message names it; not written.'}
          503: {description: Redis is unreachable.}
        """
        return await handle(request, "/push", PUSH_FIELDS, "push_source_name", None)

    async def write_to_online_store(request: Request) -> Response:
        """
        summary: Write rows of a feature view online (Feast's /write-to-online-store)
        responses:
          200: {description: 'Rows written: counts of written, stale, expired and superseded rows.'}
          400: {description: Malformed request.}
          401: {description: Missing or wrong bearer token.}
          404: {description: Unknown feature view.}
          413: {description: More rows than the maximum batch.}
          415: {description: 'The body is not sent as Content-Type: application/json.'}
          422: {description: 'Rows that do not fit the view: the message names the row and column; nothing was written.'}
          409: {description: 'A key of the view holds what featsync did not write: the message names it; not written.'}
          503: {description: Redis is unreachable.}
        """
        return await handle(request, "/write-to-online-store", WRITE_FIELDS, "feature_view_name", TO_ONLINE)

    return [
        Route("/push", push, methods=["POST"]),
        Route("/write-to-online-store", write_to_online_store, methods=["POST"]),
    ]


def _plain_error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"detail": message}), status, media_type="application/json")
