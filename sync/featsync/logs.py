"""Logging for every command: the standard `logging` module, as text or JSON lines on stderr.

`featsync <command> --log-level info --log-format json` (or FEATSYNC_LOG_LEVEL and
FEATSYNC_LOG_FORMAT) configures the root logger once; library modules only ever call
``logging.getLogger(__name__)``. A JSON line is one object with ``time`` (UTC, ISO 8601),
``level``, ``logger`` and ``message``, plus ``exception`` when there is one and the
structured fields of an access-log line. The server's worker processes get the same
configuration through uvicorn's ``log_config`` (`uvicorn_config`).
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import time
from datetime import UTC, datetime
from typing import Any

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Extra fields a record may carry that a JSON line keeps as fields (the access log's).
STRUCTURED = ("client", "method", "path", "status", "duration_ms", "bytes")


class UTCFormatter(logging.Formatter):
    """Text lines stamped in UTC, like every other time featsync shows."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return _stamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception, access fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in STRUCTURED:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return JsonFormatter() if fmt == "json" else UTCFormatter(TEXT_FORMAT)


def configure(level: str = "warning", fmt: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "featsync", False)]:
        root.removeHandler(old)
    handler.featsync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


def uvicorn_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """uvicorn's log_config: applied in every worker process, so workers log like the CLI.

    uvicorn's own loggers (startup, errors) propagate to the root handler; its access log
    stays off (featsync's access log middleware writes `featsync.access` lines instead).
    """
    name = f"{JsonFormatter.__module__}.{JsonFormatter.__qualname__}" if fmt == "json" else None
    text = f"{UTCFormatter.__module__}.{UTCFormatter.__qualname__}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"featsync": {"()": name or text, **({} if name else {"fmt": TEXT_FORMAT})}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "featsync", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def access_log(app: Any) -> Any:
    """ASGI middleware: one `featsync.access` line per HTTP request, at info.

    Fields: client, method, path (never the query string), status, duration_ms, bytes. Text:
    ``127.0.0.1 GET /ui/ 200 3.1ms 5120B``; JSON lines carry them as fields.
    """
    logger = logging.getLogger("featsync.access")

    async def logged(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status, size = 500, 0
        path = scope.get("root_path", "") + scope.get("path", "")  # now: routing rewrites the scope

        async def sending(message: dict) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            client = (scope.get("client") or ("-",))[0]
            ms = (time.perf_counter() - start) * 1000
            fields = {"client": client, "method": scope["method"], "path": path, "status": status}
            fields.update(duration_ms=round(ms, 3), bytes=size)
            logger.info("%s %s %s %d %.1fms %dB", client, scope["method"], path, status, ms, size, extra=fields)

    return logged
