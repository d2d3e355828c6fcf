"""`featsync serve`: the HTTP feature server, Feast-compatible, on Starlette + uvicorn.

Why this stack: Starlette is the ASGI toolkit FastAPI itself is built on, without the
per-request pydantic validation (our request has four fields, checked by hand with
messages that name the problem); uvicorn with uvloop and httptools is its fastest
standard server. Redis is read with one MGET per request, through the same ReadPlan as the
Python API (featsync.online.serving), so both read identically. POST /get-online-features is
answered beneath Starlette's layers (featsync.online.limits.direct_post): they cost about as
much CPU as the request's own work.

Each worker process loads the manifest once, when it starts (the parent has already
parsed and validated it, so a bad project fails before any worker starts). Metrics use
prometheus_client's multiprocess mode, so `/metrics` adds up all workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib.util
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from featsync.errors import FeatsyncError, NotFoundError
from featsync.floats import json_floats
from featsync.logs import access_log, uvicorn_config
from featsync.online.connections import (
    async_mget,
    async_redis_client,
    check_redis_url,
    embedded_redis,
    embedded_url,
    stop_embedded,
)
from featsync.online.layout import StoredValueError, from_micros
from featsync.online.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_READ_TIMEOUT,
    ReadDeadlineProtocol,
    direct_post,
    error_body,
    guard,
    http_error_handler,
    server_error_handler,
)
from featsync.online.metrics import MULTIPROC_ENV, Metrics, new_metrics_dir, view_gauges
from featsync.online.serving import (
    EXPIRED,
    NOT_FOUND,
    PRESENT,
    VECTOR_MIN,
    AsyncOnlineReader,
    OnlineResponse,
    OnlineStoreUnavailable,
    RequestError,
)
from featsync.online.state import layout_of, read_states
from featsync.project import Project
from featsync.quality.validate import resolve_now
from featsync.results import ResultCache

CONFIG_ENV = "FEATSYNC_SERVE_CONFIG_FILE"  # the path of the workers' config file (mode 0600), never the config itself
REQUEST_FIELDS = {"features", "feature_service", "entities", "full_feature_names", "request_data"}
# Feast's exception class (feast/errors.py) for each featsync NotFoundError kind: error bodies
# carry {"module", "class", "message"} as Feast's own server does, so its clients can type them.
FEAST_NOT_FOUND = {
    "feature view": "FeatureViewNotFoundException",
    "feature service": "FeatureServiceNotFoundException",
    "entity": "EntityNotFoundException",
    "on-demand feature": "OnDemandFeatureViewNotFoundException",
}
log = logging.getLogger(__name__)
# Feast's FieldStatus names; a stored NULL is NULL_VALUE, an expired value OUTSIDE_MAX_AGE.
FEAST_STATUS = {PRESENT: "PRESENT", NOT_FOUND: "NOT_FOUND", EXPIRED: "OUTSIDE_MAX_AGE"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # Feast's event time for entity columns and missing values
NUMPY_UTC = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


@dataclass(frozen=True)
class ServeConfig:
    """What every worker needs to build the app.

    Passed to workers as JSON in a file only the server's user can read (its path in
    CONFIG_ENV; see `config_file`), which goes away with the server: it holds the Redis URL
    (with its password) and the token, which an environment variable would show to anyone
    reading /proc/<pid>/environ of a worker (and to the workers' child processes).

    The CLI builds it once (`of`) from its options; `serve` only fills in the Redis URL when
    none was given (FEATSYNC_REDIS_URL, else the embedded server it starts).
    """

    project_dir: str
    profiles_dir: str
    target: str | None
    redis_url: str | None  # None: FEATSYNC_REDIS_URL or the embedded Redis, decided by `serve`
    key_prefix: str | None = None
    max_batch: int = 1000
    redis_timeout: float = 1.0
    ui: bool = False  # the feature-discovery pages under /ui (featsync.ui)
    auth_token: str | None = field(default=None, repr=False)  # the server's bearer token: the UI pages need it too
    access_log: bool = False
    log_level: str = "info"
    log_format: str = "text"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # 413 above, before reading the body (featsync.online.limits)
    read_timeout: float = DEFAULT_READ_TIMEOUT  # seconds for a request's headers, and again for its body
    auth_reads: bool = False  # /get-online-features requires the token too (writes and the UI always do)

    @classmethod
    def of(cls, project: Project, **options: Any) -> ServeConfig:
        """The config of a server of `project`, with the given options (the fields above)."""
        return cls(str(project.project_dir), str(project.profiles_dir), project.target, **options)


class PayloadTooLarge(RequestError):
    """More entity rows than --max-batch: 413."""


def feast_response(response: OnlineResponse, n: int) -> dict[str, Any]:
    """Feast's feature-server JSON: metadata.feature_names, then one result per column.

    The features of one view share their statuses and event times, so each view's are
    serialized once (orjson.Fragment) and reused; only a stored NULL (NULL_VALUE) differs.
    One entity row, the common online request, takes a shorter way to the same JSON.
    A float feature's NaN and +-inf are written as "NaN", "Infinity" and "-Infinity", as
    Feast's server writes them (featsync.floats; orjson alone would write null), status PRESENT.
    """
    return _feast_response_one_row(response) if n == 1 else _feast_response_rows(response, n)


def _feast_response_rows(response: OnlineResponse, n: int) -> dict[str, Any]:
    entity_statuses = orjson.Fragment(orjson.dumps(["PRESENT"] * n))
    entity_times = orjson.Fragment(orjson.dumps([EPOCH] * n, option=orjson.OPT_UTC_Z))
    results = [
        {"values": values, "statuses": entity_statuses, "event_timestamps": entity_times} for values in response.entities.values()
    ]
    shared: dict[str, tuple[int, Any, Any]] = {}
    floats = response.float_features
    for output, values in response.features.items():
        if output in floats:
            values = json_floats(values)
        statuses = response.statuses[output]
        view = response.feature_views.get(output)
        if view is None or view not in shared:
            missing = n - statuses.count(PRESENT)
            status_json = orjson.Fragment(orjson.dumps([FEAST_STATUS[status] for status in statuses]))
            times_json = event_times_json(response.event_micros.get(view) or [None] * n)
            if view is not None:
                shared[view] = (missing, status_json, times_json)
        else:
            missing, status_json, times_json = shared[view]
        if values.count(None) != missing:  # stored NULLs among the present values
            status_json = [
                ("NULL_VALUE" if value is None else "PRESENT") if status == PRESENT else FEAST_STATUS[status]
                for status, value in zip(statuses, values, strict=True)
            ]
        results.append({"values": values, "statuses": status_json, "event_timestamps": times_json})
    return {"metadata": {"feature_names": [*response.entities, *response.features]}, "results": results}


ONE_PRESENT, ONE_NULL, ONE_EPOCH = ["PRESENT"], ["NULL_VALUE"], [EPOCH]  # shared: orjson only reads them


def _feast_response_one_row(response: OnlineResponse) -> dict[str, Any]:
    """feast_response for one entity row: one-item lists, no serializing ahead (tests/test_server_response.py
    holds it to the general path's bytes)."""
    results = [
        {"values": values, "statuses": ONE_PRESENT, "event_timestamps": ONE_EPOCH} for values in response.entities.values()
    ]
    event_micros, feature_views, statuses = response.event_micros, response.feature_views, response.statuses
    floats = response.float_features
    times: dict[str | None, list[datetime]] = {None: ONE_EPOCH}  # by view: its row's event time
    for output, values in response.features.items():
        if output in floats:
            values = json_floats(values)
        status = statuses[output][0]
        if status != PRESENT:
            results.append({"values": values, "statuses": [FEAST_STATUS[status]], "event_timestamps": ONE_EPOCH})
            continue
        view = feature_views.get(output)
        time_json = times.get(view)
        if time_json is None:
            micros = event_micros[view][0] if view in event_micros else None
            time_json = times[view] = ONE_EPOCH if micros is None else [from_micros(micros)]
        results.append(
            {"values": values, "statuses": ONE_NULL if values[0] is None else ONE_PRESENT, "event_timestamps": time_json}
        )
    return {"metadata": {"feature_names": [*response.entities, *response.features]}, "results": results}


def event_times_json(micros: list[int | None]) -> Any:
    """RFC 3339 UTC event times ('...Z'), Feast's epoch for a missing value; numpy does many at once."""
    filled = [0 if m is None else m for m in micros]
    if len(filled) >= VECTOR_MIN:
        return orjson.Fragment(orjson.dumps(np.array(filled, dtype="datetime64[us]"), option=NUMPY_UTC))
    return orjson.Fragment(orjson.dumps([from_micros(m) for m in filled], option=orjson.OPT_UTC_Z))


def parse_request(body: bytes, max_batch: int) -> tuple[Mapping[str, Any], list[str] | None, str | None, bool, Any]:
    """A Feast request body, checked field by field; each problem is a RequestError naming it."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object")
    unknown = payload.keys() - REQUEST_FIELDS
    if unknown:  # as Feast's server: fields it does not use (include_feature_view_version_metadata, ...) are ignored
        log.debug("ignored request field(s): %s", ", ".join(sorted(unknown)))
    features, service = payload.get("features"), payload.get("feature_service")
    if features is not None and not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise RequestError("'features' must be a list of 'feature_view:feature' strings")
    if service is not None and not isinstance(service, str):
        raise RequestError("'feature_service' must be a string")
    if not features and service is None:
        raise RequestError("give 'features' or 'feature_service'")
    if features and service is not None:
        raise RequestError("give 'features' or 'feature_service', not both")
    entities = payload.get("entities")
    if not isinstance(entities, dict):
        raise RequestError("'entities' must be an object of columns: {entity: [values, ...]}")
    for name, column in entities.items():
        if isinstance(column, list) and len(column) > max_batch:
            raise PayloadTooLarge(f"entity '{name}' has {len(column)} rows; the server's maximum batch is {max_batch} rows")
    full_feature_names = payload.get("full_feature_names", False)
    if not isinstance(full_feature_names, bool):
        raise RequestError("'full_feature_names' must be true or false")
    request_data = payload.get("request_data")
    if request_data is not None and not isinstance(request_data, dict):
        raise RequestError("'request_data' must be an object of columns: {field: [values, ...]}")
    return entities, features, service, full_feature_names, request_data


def reason(exc: BaseException) -> str:
    """An exception as a message's reason: its text, else its type (asyncio's TimeoutError, a
    hung Redis, has no text; an exception object is always true, so `exc or ...` never fell back)."""
    return str(exc) or type(exc).__name__


def error(status: int, message: str, feast_class: str = "FeastError") -> Response:
    """An error body both for curl users (`detail`) and for Feast clients: Feast's server answers
    {"module", "class", "message"} (FeastError.to_error_detail), which FeastError.from_error_detail
    turns back into the typed exception."""
    return Response(error_body(message, feast_class), status, media_type="application/json")


def feast_class_of(exc: FeatsyncError) -> str:
    """The Feast exception class that means the same as a featsync error (feast/errors.py)."""
    if isinstance(exc, NotFoundError):
        return FEAST_NOT_FOUND.get(exc.kind or "", "FeastObjectNotFoundException")
    message = str(exc)
    if "needs request field" in message:
        return "RequestDataNotFoundInEntityRowsException"
    if "use full_feature_names" in message:
        return "FeatureNameCollisionError"
    if message.startswith("'features' must be"):
        return "InvalidFeaturesParameterType"
    if message.startswith("missing entity key") or " lacks " in message:
        return "FeastEntityDFMissingColumnsError"
    return "FeastError"


def create_app(config: ServeConfig) -> Starlette:
    """The ASGI app of one worker: manifest loaded here, once; Redis connected lazily."""
    project = Project.open(config.project_dir, config.profiles_dir, config.target)
    registry = project.registry()
    # Everything loaded so far (dbt, the manifest, the registry) lives as long as the worker:
    # keep the cyclic collector from walking it again on every full collection, which would
    # otherwise land as a multi-millisecond pause on some unlucky request.
    gc.collect()
    gc.freeze()
    metrics = Metrics()
    reader = AsyncOnlineReader(registry, None, config.key_prefix, timeout=config.redis_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reader.client = async_redis_client(config.redis_url, config.redis_timeout)
        reader.mget = async_mget(config.redis_url, config.redis_timeout)  # the hot path's lean MGET
        yield
        await reader.client.aclose()
        if reader.mget is not None:
            await reader.mget.aclose()

    async def get_online_features(request: Request) -> Response:
        """
        summary: Online features of entities (Feast feature-server compatible)
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: '#/components/schemas/GetOnlineFeaturesRequest'}
        responses:
          200:
            description: One result per column (entities first), with values, statuses and event timestamps.
            content:
              application/json:
                schema: {$ref: '#/components/schemas/GetOnlineFeaturesResponse'}
          400: {description: 'Malformed request: bad JSON, wrong type, missing entity key, mismatched lengths.'}
          404: {description: Unknown feature view, feature or feature service.}
          413: {description: More entity rows than the configured maximum batch.}
          503: {description: Redis is unreachable.}
        """
        # POSTs are answered by online_features through direct_post, before Starlette; this
        # route gives the OpenAPI schema, 405 to other methods, and the same answer if mounted alone.
        status, body = await online_features(await request.body())
        return Response(body, status, media_type="application/json")

    async def online_features(body: bytes) -> tuple[int, bytes]:
        """The status and JSON answer to a /get-online-features body (both routes to it)."""
        start = time.perf_counter()
        try:
            entities, features, service, full_names, request_data = parse_request(body, config.max_batch)
            plan, response = await reader.get_columns(entities, features, service, full_names, request_data)
            n = len(next(iter(response.entities.values()), ()))
            status, answer = 200, orjson.dumps(feast_response(response, n), option=orjson.OPT_UTC_Z)
            metrics.count_lookups(response)
        except StoredValueError:
            raise  # not the client's fault: a JSON 500, counted (featsync.online.limits)
        except PayloadTooLarge as exc:
            status, answer = 413, error_body(str(exc))
        except OnlineStoreUnavailable as exc:
            status, answer = 503, error_body(str(exc))
        except NotFoundError as exc:
            status, answer = 404, error_body(str(exc), feast_class_of(exc))
        except FeatsyncError as exc:  # RequestError and every other problem with what was asked
            status, answer = 400, error_body(str(exc), feast_class_of(exc))
        metrics.observe("/get-online-features", status, time.perf_counter() - start)
        return status, answer

    async def health(request: Request) -> Response:
        """
        summary: Ready when the manifest is loaded and Redis answers PING (else 503)
        responses:
          200: {description: Ready.}
          503: {description: Redis unreachable.}
        """
        start = time.perf_counter()
        body: dict[str, Any] = {
            "manifest": "loaded",
            "project": registry.project_name,
            "feature_views": len(registry.feature_views),
        }
        try:
            await asyncio.wait_for(reader.client.ping(), config.redis_timeout * 2)
            body.update(status="ok", redis="reachable")
            code = 200
        except (redis.RedisError, OSError, TimeoutError) as exc:
            body.update(status="unavailable", redis=f"unreachable: {reason(exc)}")
            code = 503
        metrics.observe("/health", code, time.perf_counter() - start)
        return Response(orjson.dumps(body), code, media_type="application/json")

    results = ResultCache(project)
    online = registry.online_views()
    layouts = [layout_of(registry, view, config.key_prefix) for view in online]

    async def metrics_endpoint(request: Request) -> Response:
        """
        summary: Prometheus metrics of all workers, and per feature view freshness and validation gauges
        responses:
          200: {description: Prometheus text format.}
        """
        try:  # one pipelined HGETALL per online view, on scrape only
            replies = await asyncio.wait_for(read_states(reader.client, layouts), config.redis_timeout * 2)
            states: dict[str, dict[str, str]] | None = {v.name: r for v, r in zip(online, replies, strict=True)}
        except (redis.RedisError, OSError, TimeoutError):
            states = None
        body = metrics.exposition() + view_gauges(registry, states, resolve_now(), results)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    schemas = SchemaGenerator(
        {"openapi": "3.0.0", "info": {"title": "featsync feature server", "version": "1"}, "components": COMPONENTS}
    )

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=app.routes))

    routes = [
        Route("/get-online-features", get_online_features, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]
    from featsync.online.push_api import WRITE_PATHS  # POST /push, /write-to-online-store
    from featsync.online.push_api import routes as push_routes

    routes += push_routes(
        project,
        lambda: reader.client,
        config.key_prefix,
        config.max_batch,
        metrics.observe,
        config.redis_timeout,
        error,
        lambda: reader.mget,
        metrics.count_error,
    )
    if config.ui:
        from featsync.ui.app import mount

        routes += mount(project, registry, lambda: reader.client, config.key_prefix, config.auth_token, config.redis_timeout)

    handlers = {Exception: server_error_handler(error), HTTPException: http_error_handler(error)}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    guarded = guard(
        direct_post(app, "/get-online-features", online_features),
        max_body_bytes=config.max_body_bytes,
        error=error,
        count_error=metrics.count_error,
        observe=metrics.observe,
        endpoints=[route.path for route in routes if isinstance(route, Route)],
        token=config.auth_token,
        token_paths=[*WRITE_PATHS, "/get-online-features"] if config.auth_reads else WRITE_PATHS,
        json_paths=WRITE_PATHS,
    )
    return access_log(guarded) if config.access_log else guarded


COMPONENTS = {
    "schemas": {
        "GetOnlineFeaturesRequest": {
            "type": "object",
            "required": ["entities"],
            "properties": {
                "features": {
                    "type": "array",
                    "items": {"type": "string"},
                    "example": ["user_transaction_features:transaction_count_7d"],
                },
                "feature_service": {"type": "string", "example": "fraud_detection"},
                "entities": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
                    "example": {"user_id": ["u0137"], "merchant_id": ["m0035"]},
                },
                "full_feature_names": {"type": "boolean", "default": False},
                "request_data": {"type": "object", "additionalProperties": {"type": "array", "items": {}}},
            },
        },
        "GetOnlineFeaturesResponse": {
            "type": "object",
            "properties": {
                "metadata": {"type": "object", "properties": {"feature_names": {"type": "array", "items": {"type": "string"}}}},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "values": {"type": "array", "items": {}},
                            "statuses": {
                                "type": "array",
                                "items": {"type": "string", "enum": ["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]},
                            },
                            "event_timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}},
                        },
                    },
                },
            },
        },
    }
}


def app_from_env() -> Any:
    """uvicorn's factory in each worker process: the config from the file CONFIG_ENV names."""
    with open(os.environ[CONFIG_ENV], encoding="utf-8") as file:
        return create_app(ServeConfig(**json.load(file)))


@contextlib.contextmanager
def config_file(config: ServeConfig) -> Iterator[str]:
    """The path of the workers' config file, readable by this user only (mode 0600), while it lasts.

    On Linux the file lives in memory only (memfd_create), held by this process and opened by
    the workers as /proc/<this pid>/fd/<fd> (a directory only this user can read): it is gone
    as soon as the server is, even SIGKILLed, when no `finally` runs, and a worker uvicorn
    restarts later still finds it. Elsewhere it is a mkstemp file removed on exit (a SIGKILL
    leaves that one behind).
    """
    data = json.dumps(asdict(config)).encode()
    fd = _memory_file(data)
    if fd is not None:
        try:
            yield f"/proc/{os.getpid()}/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="featsync-serve-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _memory_file(data: bytes) -> int | None:
    """A close-on-exec descriptor of an anonymous in-memory file (mode 0600) holding `data`, or
    None where there is none to be had (no memfd_create or no /proc: not Linux, or a sandbox)."""
    if not hasattr(os, "memfd_create") or not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        return None
    try:
        fd = os.memfd_create("featsync-serve-config")
    except OSError:
        return None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)  # a config is a few hundred bytes: one write
    except BaseException:
        os.close(fd)
        raise
    return fd


def serve(project: Project, config: ServeConfig, host: str = "127.0.0.1", port: int = 6566, workers: int = 1) -> None:
    """Run the server until interrupted; validates the project first, in this process.

    FEATSYNC_REDIS_URL (it may hold a password) is taken out of the environment first, so no
    process started from here on inherits it (dbt's helpers, multiprocessing's resource
    tracker, the workers): the URL reaches the workers in the config file only.
    """
    env_url = os.environ.pop("FEATSYNC_REDIS_URL", None)
    try:
        _serve(project, replace(config, redis_url=config.redis_url or env_url), host, port, workers)
    finally:
        if env_url is not None:
            os.environ["FEATSYNC_REDIS_URL"] = env_url


def _serve(project: Project, config: ServeConfig, host: str, port: int, workers: int) -> None:
    if config.redis_url:  # a malformed URL would fail in every worker's start-up, with a traceback
        check_redis_url(config.redis_url)
    project.registry()  # parse + validate once here: declaration errors before any worker starts
    embedded = None
    if not config.redis_url:
        embedded = embedded_redis(project)  # the embedded redis-server lives as long as this process
        config = replace(config, redis_url=embedded_url(embedded))
    own_metrics_dir = not os.environ.get(MULTIPROC_ENV)
    if own_metrics_dir:
        os.environ[MULTIPROC_ENV] = new_metrics_dir()  # and the dirs of SIGKILLed servers removed
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: with the default handler
    # the process would die there, before the cleanup below (embedded Redis, metrics files).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with config_file(config) as path:
            os.environ[CONFIG_ENV] = path
            _run_uvicorn(config, host, port, workers)
    finally:
        os.environ.pop(CONFIG_ENV, None)
        if own_metrics_dir:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV), ignore_errors=True)
        if embedded is not None:
            stop_embedded(embedded)


def _run_uvicorn(config: ServeConfig, host: str, port: int, workers: int) -> None:
    """uvicorn until it stops; its workers build the app from the file CONFIG_ENV names."""
    import uvicorn

    try:
        uvicorn.run(
            "featsync.online.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",  # no uvloop on Windows
            http=functools.partial(ReadDeadlineProtocol, read_timeout=config.read_timeout),  # httptools + read deadlines
            access_log=False,  # uvicorn's; featsync.access lines when --access-log (they cost more than a request)
            log_level=config.log_level,
            log_config=uvicorn_config(config.log_level, config.log_format),
        )
    except SystemExit as exc:
        if exc.code != 128 + signal.SIGTERM:
            raise


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
