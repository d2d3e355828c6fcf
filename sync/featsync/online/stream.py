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

An entry that cannot be pushed (bad JSON, an unknown view, a column, type or time the view
refuses, an expectation it fails: any refusal of its content, which `RowIngest.check` gives
before anything is written) is not retried forever: the batch's entries are checked one by
one, the good ones pushed together (one write, one offline log file), and each bad entry is
copied with its error to the dead-letter stream `<STREAM>:dead` and acknowledged, by one
script with the batch's XACK (both or neither). A dead letter is written only while its entry
is pending, by the script whose XACK acknowledges it, so two consumers that both handled an entry (one claimed it
from the other) write one dead letter. Its own fields (`featsync:error`, `featsync:entry`)
come first; the entry's fields follow as they are.

Outages: when Redis (the stream's or the online store's) or the warehouse (the offline log)
is unreachable, the consumer logs it and starts over after a bounded exponential backoff
(0.1 s doubling up to 5 s), for as long as the outage lasts: it joins the group again and
re-reads its own pending entries first, so the batch in flight is pushed again (at-least-once;
newest-wins makes that harmless) and nothing read is lost. Any other error (a refused
command, a wrong password, a view id owned by another view, a full disk) is not transient:
it stops the consumer, and `featsync stream` exits non-zero naming it.
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
from featsync.online.push import UNAVAILABLE, ForeignValueError
from featsync.online.rows import PushRowsError

log = logging.getLogger(__name__)
DEAD_SUFFIX = ":dead"
# A dead letter's own fields, before the entry's (which are copied as they are): the error and
# the entry's id. Their prefix is reserved (docs/push-api.md, the dead-letter format).
DEAD_ERROR, DEAD_ENTRY = "featsync:error", "featsync:entry"
# Settle a batch: KEYS = the stream, its dead-letter stream; ARGV = the group, the number of
# dead letters, then each one's entry id, error, field count and fields, then the ids of the
# entries to acknowledge. Each dead letter only if its entry is still pending in the group (so
# it is written once, whichever consumers handled the entry: the script's XACK that follows
# ends that); returns how many were written. Every XADD comes before any XACK: a script that
# fails midway (the dead-letter key holds another type, an ACL without XADD) has then
# acknowledged nothing, so no entry is acknowledged without its dead letter. (A script is not
# rolled back, and an XACK first had already acknowledged the entry when its XADD failed.)
SETTLE = f"""
local at, written, seen = 3, 0, {{}}
for _ = 1, tonumber(ARGV[2]) do
  local id, n = ARGV[at], tonumber(ARGV[at + 2])
  if not seen[id] and #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) == 1 then
    seen[id] = true
    local letter = {{'{DEAD_ERROR}', ARGV[at + 1], '{DEAD_ENTRY}', id}}
    for i = at + 3, at + 2 + n do letter[#letter + 1] = ARGV[i] end
    redis.call('XADD', KEYS[2], '*', unpack(letter))
    written = written + 1
  end
  at = at + 3 + n
end
while at <= #ARGV do
  local last = math.min(at + 999, #ARGV)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, at, last))
  at = last + 1
end
return written
"""
# Errors an outage raises (a restart, a failover, a network cut): the consumer retries them.
TRANSIENT = (*UNAVAILABLE, redis.ReadOnlyError, ConnectionError, TimeoutError)
# Connection errors a retry cannot cure.
PERMANENT = (redis.AuthenticationError,)


def transient(exc: BaseException) -> bool:
    """Whether an error, or one it was raised from, is an outage: Redis unreachable (featsync
    wraps it in a FeatsyncError), or a warehouse driver's DB-API OperationalError (a lost or
    refused connection) for the offline log."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, PERMANENT):
            return False
        if isinstance(cause, TRANSIENT) or any(c.__name__ == "OperationalError" for c in type(cause).__mro__):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


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
    retries: int = 0  # outages retried (see the module docstring)


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
    retry_first: float = 0.1  # seconds before the first retry after an outage; doubled up to retry_max
    retry_max: float = 5.0
    stats: StreamStats = field(default_factory=StreamStats)
    _failures: int = field(default=0, init=False)  # outages in a row, reset once a batch goes through
    _settle_script: Any = field(default=None, init=False)  # SETTLE, registered once (its SHA1 computed once)

    def ensure_group(self) -> None:
        try:
            self.source.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise FeatsyncError(f"cannot create consumer group '{self.group}' on stream '{self.stream}': {exc}") from exc

    def run(self, stop_when_idle: float | None = None, should_stop: Callable[[], bool] = lambda: False) -> StreamStats:
        """Consume until stopped; with stop_when_idle, return after that many seconds without
        entries. Outages are retried (see the module docstring); other errors propagate."""
        while True:
            try:
                self._consume(stop_when_idle, should_stop)
                return self.stats
            except Exception as exc:
                if not transient(exc):
                    raise
                self._failures += 1
                self.stats.retries += 1
                delay = min(self.retry_max, self.retry_first * 2 ** (self._failures - 1))
                log.warning(
                    "stream %s: unavailable (%s); retry %d in %.1fs, unacknowledged entries will be pushed again",
                    self.stream,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    self._failures,
                    delay,
                )
                deadline = time.monotonic() + delay
                while not should_stop() and time.monotonic() < deadline:
                    time.sleep(min(0.1, delay))
                if should_stop():
                    return self.stats

    def _consume(self, stop_when_idle: float | None, should_stop: Callable[[], bool]) -> None:
        """One session: join the group, push this consumer's pending entries, then new ones."""
        self.ensure_group()
        idle_since = time.monotonic()
        # First what this consumer read before and did not acknowledge (a crash): "0" reads pending entries.
        while not should_stop():
            entries = self._read("0")
            self._available()
            if not entries:
                break
            self._handle(entries)
        while not should_stop():
            entries = self._claim() or self._read(">")
            self._available()
            if entries:
                self._handle(entries)
                idle_since = time.monotonic()
            elif stop_when_idle is not None and time.monotonic() - idle_since >= stop_when_idle:
                break

    def _available(self) -> None:
        if self._failures:
            log.warning("stream %s: available again after %d retries; consuming", self.stream, self._failures)
            self._failures = 0

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
        fields_of = dict(entries)
        by_view: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        dead: list[tuple[bytes, str]] = []  # (entry id, why)
        for entry_id, fields in entries:
            try:
                view, row = self._row(fields)
            except PushRowsError as exc:
                dead.append((entry_id, str(exc)))
                continue
            by_view.setdefault(view, []).append((entry_id, row))
        now = self.ingest.clock()
        for name, items in by_view.items():
            try:  # the project's part (its registry, the view's suite): a failure there is no entry's fault
                self.ingest.checks(self.ingest.view(name))
            except NotFoundError as exc:  # the entries name a view that does not exist
                dead += [(entry_id, str(exc)) for entry_id, _ in items]
                continue
            rows = [row for _, row in items]
            try:
                checked = self.ingest.check(name, rows, self.to, now)
            except FeatsyncError:
                # A refusal (it wrote nothing): the entries one by one; the refused ones are dead
                # letters, the others are pushed together, in one write.
                checked, refused = self.ingest.check_each(name, rows, self.to, now)
                dead += [(items[index][0], str(exc)) for index, exc in refused]
            if checked is not None:
                # Any other error here (Redis or the warehouse away) propagates: nothing is
                # acknowledged, and the entries are read again after a restart.
                try:
                    self.ingest.write(checked)
                    self.stats.pushed += checked.rows
                except ForeignValueError:
                    # A key of the view holds a value featsync did not write, and the script call
                    # that met it wrote nothing: the entries again one by one (every write is
                    # idempotent), so that only the ones at that key are dead letters.
                    refused_ids = {entry_id for entry_id, _ in dead}
                    for entry_id, row in items:
                        if entry_id not in refused_ids:
                            try:
                                self.ingest.write(self.ingest.check(name, [row], self.to, now))
                                self.stats.pushed += 1
                            except ForeignValueError as exc:
                                dead.append((entry_id, str(exc)))
        self._settle(entries, [(entry_id, fields_of[entry_id], reason) for entry_id, reason in dead])

    def _settle(self, entries: list[tuple[bytes, dict[bytes, bytes]]], dead: list[tuple[bytes, dict[bytes, bytes], str]]) -> None:
        """Acknowledge a handled batch and write its dead letters, in one script (both or neither,
        after an outage, or when a command of the script fails: its XADDs come before its XACKs).
        A dead letter is written only by the script whose XACK acknowledges its entry:
        when two consumers handle the same entry (one claimed it from the other), one writes it."""
        args: list[Any] = [self.group, len(dead)]
        for entry_id, fields, reason in dead:
            args += [entry_id, reason.encode(), 2 * len(fields)]
            for name, value in fields.items():
                args += [name, value]
        args += [entry_id for entry_id, _ in entries]
        if self._settle_script is None:
            self._settle_script = self.source.register_script(SETTLE)
        written = self._settle_script(keys=[self.stream, self.stream + DEAD_SUFFIX], args=args)
        if written:
            self.stats.dead += written
            log.warning(
                "stream %s: %d entries sent to %s%s; first: %s", self.stream, written, self.stream, DEAD_SUFFIX, dead[0][2]
            )

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
