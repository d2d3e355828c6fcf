"""`featsync stream`: a Redis Streams consumer that pushes events in micro-batches.

    featsync stream --from redis://[user:password@]host[:port]/DB/STREAM --select VIEW

The source URL is a Redis URL whose path is `/<db number>/<stream key>` (the stream key may
itself contain '/'); rediss:// for TLS. Each stream entry holds one row:

    XADD STREAM * row '{"user_id": "u1", "event_timestamp": "2024-05-01T10:00:00Z", "amount": 12.5}'

with an optional `feature_view` field naming the view (else --select's). The consumer joins
a consumer group (created at the stream's start if missing), reads up to --batch entries,
pushes them through featsync.online.ingest (the same checks, newest-wins writes and offline
log as POST /push), then XACKs them. Delivery is at-least-once: after a crash the consumer,
restarted under the same name, first re-reads what it had read but not acknowledged (its
pending entries), and entries left pending by another consumer for --claim-idle are claimed.
Writing an entry twice changes nothing online (newest event time wins, equal times write
the same value) and the offline log is deduplicated by the model (one row per entity and
event time), so a replay neither loses nor doubles anything.

An entry that cannot be pushed (bad JSON, a column or type the view refuses, an expectation
it fails) is not retried forever: the batch is pushed entry by entry, and each bad entry is
copied with its error to the dead-letter stream `<STREAM>:dead` and acknowledged.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import redis

from featsync.errors import FeatsyncError, NotFoundError, UsageError
from featsync.online.ingest import RowIngest
from featsync.online.rows import PushRowsError

log = logging.getLogger(__name__)
DEAD_SUFFIX = ":dead"


@dataclass(frozen=True)
class StreamSource:
    """A parsed --from URL: the Redis to read, and the stream key in it."""

    url: str  # the Redis URL without the stream key (redis://host:port/db)
    stream: str

    @classmethod
    def parse(cls, url: str) -> StreamSource:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise UsageError(f"--from must be redis://host[:port]/DB/STREAM (or rediss://), got {url!r}")
        db, _, stream = parts.path.lstrip("/").partition("/")
        if not db.isdigit() or not stream:
            raise UsageError(f"--from needs a database number and a stream key: redis://host[:port]/DB/STREAM, got {url!r}")
        base = f"{parts.scheme}://{parts.netloc}/{db}"
        return cls(base, unquote(stream))


@dataclass
class StreamStats:
    read: int = 0  # entries read (a redelivered entry counts again)
    pushed: int = 0  # rows pushed
    dead: int = 0  # entries sent to the dead-letter stream
    batches: int = 0


@dataclass
class StreamConsumer:
    """Reads a stream through a consumer group and pushes its rows (see the module docstring)."""

    ingest: RowIngest
    source: redis.Redis
    stream: str
    view: str | None = None
    to: str = "online"
    group: str = "featsync"
    consumer: str = field(default_factory=lambda: f"featsync-{socket.gethostname()}")
    batch: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    stats: StreamStats = field(default_factory=StreamStats)

    def ensure_group(self) -> None:
        try:
            self.source.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise FeatsyncError(f"cannot create consumer group '{self.group}' on stream '{self.stream}': {exc}") from exc

    def run(self, stop_when_idle: float | None = None, should_stop: Callable[[], bool] = lambda: False) -> StreamStats:
        """Consume until stopped; with stop_when_idle, return after that many seconds without entries."""
        self.ensure_group()
        idle_since = time.monotonic()
        # First what this consumer read before and did not acknowledge (a crash): "0" reads pending entries.
        while not should_stop():
            entries = self._read("0")
            if not entries:
                break
            self._handle(entries)
        while not should_stop():
            entries = self._claim() or self._read(">")
            if entries:
                self._handle(entries)
                idle_since = time.monotonic()
            elif stop_when_idle is not None and time.monotonic() - idle_since >= stop_when_idle:
                break
        return self.stats

    def _read(self, start: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        block = None if start == "0" else self.block_ms
        reply = self.source.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.batch, block=block)
        return [(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries if fields is not None]

    def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries another consumer read and left unacknowledged for claim_idle_ms (it died)."""
        reply = self.source.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch)
        return [(entry_id, fields) for entry_id, fields in reply[1] if fields]

    def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        self.stats.read += len(entries)
        self.stats.batches += 1
        by_view: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        for entry_id, fields in entries:
            try:
                view, row = self._row(fields)
            except PushRowsError as exc:
                dead.append((entry_id, fields, str(exc)))
                continue
            by_view.setdefault(view, []).append((entry_id, row))
        for view, items in by_view.items():
            # Any other error (Redis or the warehouse away) propagates: nothing is acknowledged,
            # and the entries are read again after a restart.
            try:
                self.ingest.push(view, [row for _, row in items], self.to)
                self.stats.pushed += len(items)
            except (PushRowsError, NotFoundError):
                fields_of = dict(entries)
                for entry_id, row in items:  # find the bad entries one by one
                    try:
                        self.ingest.push(view, [row], self.to)
                        self.stats.pushed += 1
                    except (PushRowsError, NotFoundError) as exc:
                        dead.append((entry_id, fields_of[entry_id], str(exc)))
        if dead:
            pipe = self.source.pipeline(transaction=False)
            for entry_id, fields, reason in dead:
                pipe.xadd(self.stream + DEAD_SUFFIX, {**fields, b"error": reason.encode(), b"entry": entry_id})
            pipe.execute()
            self.stats.dead += len(dead)
            log.warning(
                "stream %s: %d entries sent to %s%s; first: %s", self.stream, len(dead), self.stream, DEAD_SUFFIX, dead[0][2]
            )
        self.source.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])

    def _row(self, fields: dict[bytes, bytes]) -> tuple[str, dict[str, Any]]:
        raw = fields.get(b"row")
        if raw is None:
            raise PushRowsError("the entry has no 'row' field (a JSON object of column: value)")
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PushRowsError(f"the entry's 'row' is not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise PushRowsError("the entry's 'row' must be a JSON object of column: value")
        view = fields.get(b"feature_view")
        name = view.decode(errors="replace") if view is not None else self.view
        if not name:
            raise PushRowsError("the entry has no 'feature_view' field and no --select view was given")
        return name, row
