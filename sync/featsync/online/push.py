"""featsync push: the latest row of every entity, from the warehouse into Redis.

The rows come from the featsync.latest_rows macro (the same order the point-in-time
join uses), compiled by dbt and streamed out of the warehouse as Arrow batches. Each
batch is encoded column-wise (featsync.online.layout) and written one of two ways, both of
which keep the newest event time on the server (a value is never replaced by one with an
older event time, atomically, whatever pushes run at once):

- the check-and-set script WRITE_NEWER, one call per chunk of rows;
- or, while most keys are absent (a first push), a plain `SET key value PXAT t NX` per
  row, which cannot replace anything, so it needs no check and runs at Redis' native
  speed; only the rows whose key existed then go through WRITE_NEWER. Which way a batch
  goes is chosen from how many keys the previous batch found absent.

TTL means what it means offline: a value is valid until event time + ttl (inclusive) and
before valid_to for SCD2 views, the join's rule, which featsync.online.validity states for
every online path; each key expires (PXAT) at the last whole millisecond of validity, and
rows no longer valid at the push's clock are not written: WRITE_NEWER removes what their
keys hold instead, unless that is newer (validity.EXPIRED).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import redis
from redis.retry import Retry

from featsync.errors import FeatsyncError, NotFoundError
from featsync.lazy import lazy
from featsync.offline.sql import naive_utc, slice_number
from featsync.offline.warehouse import BATCH_ROWS, Warehouse, connect, reading
from featsync.online.connections import describe_client, push_retry, read_lines, server_identity
from featsync.online.layout import MAX_MICROS, MIN_MICROS, Layout, StoredValueError, from_micros
from featsync.online.layout import epoch_micros as column_micros
from featsync.online.row_push import PushedRows, SmallRows
from featsync.online.state import (
    AT_WATERMARK,
    NEWEST_EVENT,
    PushState,
    StateError,
    claim,
    decode_state,
    event_time_text,
    forget_progress,
    layout_of,
    new_run,
    own,
    raise_newest,
    read_state,
    save_state,
)
from featsync.online.validity import CLOCK_SKEW, EXPIRED, epoch_micros, live_rows
from featsync.project import Project
from featsync.registry import FeatureView

pc = lazy("pyarrow.compute")  # its import builds ~300 wrappers (0.1 s of CPU): a push with nothing new needs none

CHUNK_ROWS = 1_000
CLUSTER_BATCH_ROWS = 4 * BATCH_ROWS  # 16 rows per script call and slot rather than 4 (Pusher.batch_rows)
log = logging.getLogger(__name__)
CHANGED_AT = "featsync_changed_at"  # the change marker of the latest rows: featsync.latest_rows(changed_at=true)
# SCD2 views: the change marker without valid_to, by which a row is "dated in the future"
# (a future valid_to is a scheduled end, not bad data); other views: CHANGED_AT itself.
DATED_AT = "featsync_dated_at"
# Redis (or part of a cluster) being unreachable, as opposed to refusing a command.
UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
)

SCRIPT_LOADS = 3  # times a push loads WRITE_NEWER again after Redis forgot it (SCRIPT FLUSH, a restart)

# Below this share of absent keys in the last batch, SET NX costs more than it saves
# (the rows it cannot write are sent again to WRITE_NEWER).
SET_NX_MIN_ABSENT = 0.5

# KEYS: the chunk's keys. ARGV[2i-1]: value i; ARGV[2i]: expire-at in ms, "0" for never, or
# EXPIRED (-1) for a latest row no longer valid: nothing is written for it, and the key's
# stored value is deleted unless its event time is after the row's (never older: a newer
# value stays); the last ARGV: the view's value shape (Layout.value_shape: its compact length, the
# full form's fixed part, texts and null bitmap), followed on a --full-refresh by a margin in
# microseconds (CLOCK_SKEW): a stored value dated after Redis' clock (TIME, at the call) plus
# that margin is then no longer newer (a future date the warehouse has corrected), so the row
# replaces or, expired, deletes it (full_refresh_shape). Redis' clock at each call, not the
# push's at its start: a row pushed meanwhile (the push API, a stream) is dated after the
# start of a long refresh, and must stay. A value of the compact length starts with
# its event time in seconds as a big-endian uint32, a full one with microseconds as a
# big-endian double (featsync.online.layout). Returns {written, stale, absent, deleted}
# (REPLY_FIELDS). One MGET
# reads every stored value of the chunk, and every one is checked before anything is
# written: a stored value that cannot be one of this view's (its length, text lengths, null
# bitmap or event time do not fit: written by something else) fails the whole call with the
# error FOREIGN_VALUE naming the key (control bytes, '\' and non-ASCII as \xNN), so a call
# is all or nothing. The checks cost a few comparisons per stored value. (Comparing the time
# prefixes as strings is not safe: Lua compares strings with strcoll, and Redis sets
# LC_COLLATE from its environment, e.g. C.UTF-8, where bytes >= 0x80 do not sort bytewise.)
FOREIGN_VALUE = "FEATSYNC_FOREIGN_VALUE"
REPLY_FIELDS = 4  # WRITE_NEWER's reply: written, stale, absent, deleted


def full_refresh_shape(value_shape: str) -> str:
    """WRITE_NEWER's last argument on a --full-refresh: the view's value shape and the margin
    beyond Redis' clock past which a stored event time no longer wins over the warehouse's row."""
    return f"{value_shape} {CLOCK_SKEW // timedelta(microseconds=1)}"


WRITE_NEWER = f"""
local compact, fixed, texts, bitmap, bound, after = string.match(ARGV[#ARGV], '^(%-?%d+) (%d+) (%d+) (%d+) (%d+) ?(%d*)$')
compact, fixed, texts, bitmap, bound = tonumber(compact), tonumber(fixed), tonumber(texts), tonumber(bitmap), tonumber(bound)
after = tonumber(after)  -- nil unless a full refresh's margin follows the shape
if after then
  local now = redis.call('TIME')
  after = tonumber(now[1]) * 1000000 + tonumber(now[2]) + after
end
local function event_us(value)
  if #value == compact then
    return struct.unpack('>I4', value) * 1000000
  end
  return struct.unpack('>d', value)
end
local function stored_us(value)
  local size = #value
  if size == compact then
    return event_us(value)
  end
  if size < fixed or (bitmap > 0 and string.byte(value, bitmap) >= bound) then
    return nil
  end
  local at = fixed + 1
  for _ = 1, texts do
    if at + 3 > size then
      return nil
    end
    at = at + 4 + struct.unpack('<I4', value, at)
  end
  local us = event_us(value)
  if at ~= size + 1 or not (us >= {float(MIN_MICROS)!r} and us <= {float(MAX_MICROS)!r}) then
    return nil
  end
  return us
end
local stored = redis.call('MGET', unpack(KEYS))
local old_us = {{}}
for i, key in ipairs(KEYS) do
  local old = stored[i]
  if old then
    old_us[i] = stored_us(old)
    if not old_us[i] then
      local shown = string.gsub(key, '[%z\\1-\\31\\\\\\127-\\255]', function(c)
        return string.format('\\\\x%02x', string.byte(c))
      end)
      return redis.error_reply('{FOREIGN_VALUE} ' .. #old .. ' ' .. shown)
    end
  end
end
local written, stale, absent, deleted = 0, 0, 0, 0
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local expire_at = ARGV[2 * i]
  if not stored[i] and expire_at ~= '{EXPIRED}' then  -- (what decides SET NX for the next batch: rows to write)
    absent = absent + 1
  end
  local kept = stored[i] and old_us[i] > event_us(value) and not (after and old_us[i] > after)
  if expire_at == '{EXPIRED}' then
    if stored[i] and not kept then
      redis.call('DEL', key)
      deleted = deleted + 1
    end
  elseif kept then
    stale = stale + 1
  else
    if expire_at == '0' then
      redis.call('SET', key, value)
    else
      redis.call('SET', key, value, 'PXAT', expire_at)
    end
    written = written + 1
  end
end
return {{written, stale, absent, deleted}}
"""


class ForeignValueError(StoredValueError):
    """WRITE_NEWER found a value at one of its keys that featsync did not write for this view's
    layout, and wrote nothing of that call. Retrying cannot help until the key is deleted or
    repaired, so the stream consumer dead-letters the entry and POST /push answers 409. `key`:
    the Redis key, as bytes."""

    def __init__(self, message: str, key: bytes = b"") -> None:
        super().__init__(message)
        self.key = key


def refused(error: Exception | str) -> FeatsyncError:
    """The error for a refused script call: ForeignValueError naming the key for WRITE_NEWER's
    FOREIGN_VALUE, else 'Redis refused a featsync write' with Redis' own reason."""
    text = str(error)
    found = re.match(rf"{FOREIGN_VALUE} (\d+) (.*)", text, re.S)
    if found is None:
        return FeatsyncError(f"Redis refused a featsync write: {text}")
    size, shown = found.groups()
    key = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), shown.encode())
    return ForeignValueError(
        f"the value stored at Redis key {key.decode(errors='backslashreplace')!r} ({size} bytes) is not a featsync value "
        "of its feature view's layout: something other than featsync wrote it, so none of the rows sent with it in "
        "one script call were written. Delete that key (or restore its value) and write again",
        key,
    )


class LostWritesError(FeatsyncError):
    """Redis lost data while a push wrote it (restarted, flushed, failed over): not marked done."""


@dataclass
class PushStats:
    """What one feature view's push did."""

    feature_view: str
    version: int
    rows_read: int = 0
    keys_written: int = 0
    skipped_stale: int = 0
    skipped_expired: int = 0
    # keys whose stored value a skipped-expired row removed (the join no longer uses it; not newer than that row)
    deleted_expired: int = 0
    skipped_superseded: int = 0  # pushed rows only: rows of a key another row of the same request beat
    seconds: float = 0.0
    dry_run: bool = False
    full_refresh: bool = True
    watermark: str | None = None  # the change marker pushed up to, ISO UTC
    future_rows: int = 0  # rows dated after the push's clock: written, but the watermark stays at the clock
    at_watermark: int = 0  # latest rows whose change marker is the watermark itself (0: not counted)
    newest_event_time: str | None = None  # the newest event time online not after the clock, ISO UTC (freshness)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rows:
    """One batch's rows, encoded for Redis."""

    keys: pa.Array
    values: pa.Array
    expire_ms: np.ndarray
    shape: str = ""  # Layout.value_shape, WRITE_NEWER's last argument

    def take(self, mask: np.ndarray) -> Rows:
        keep = pa.array(mask)
        return Rows(self.keys.filter(keep), self.values.filter(keep), self.expire_ms[mask], self.shape)

    def select(self, rows: np.ndarray) -> Rows:
        """The rows at these positions, in this order."""
        at = pa.array(rows, pa.int64())
        return Rows(self.keys.take(at), self.values.take(at), self.expire_ms[rows], self.shape)


@dataclass
class InFlight:
    """A batch whose commands were sent and whose replies are not read yet."""

    rows: Rows
    commands: list
    connection: Any  # None when sending failed and the batch must be resent
    set_nx: bool = False  # SET NX per row (else WRITE_NEWER per chunk)
    replies: list | None = None  # already read
    cluster: Any = None  # a Redis Cluster round in flight (featsync.online.cluster.Sent)


@dataclass
class Seen:
    """What a push's rows held, for the state it saves: the newest change marker (naive UTC),
    how many rows carry it, and the newest event time not after the clock (aware UTC)."""

    newest: datetime | None = None
    at_newest: int = 0
    newest_event: datetime | None = None

    def add(self, batch: pa.RecordBatch, changed: datetime | None, event: datetime | None) -> None:
        if changed is not None:
            at = _count_at(batch.column(CHANGED_AT), changed)
            self.merge(Seen(changed, at, None))
        self.newest_event = _later(self.newest_event, event)

    def merge(self, other: Seen) -> None:
        if other.newest is not None:
            if self.newest is None or other.newest > self.newest:
                self.newest, self.at_newest = other.newest, other.at_newest
            elif other.newest == self.newest:
                self.at_newest += other.at_newest
        self.newest_event = _later(self.newest_event, other.newest_event)


@dataclass
class Pusher:
    """Pushes the online feature views of one project into one Redis."""

    project: Project
    client: redis.Redis
    key_prefix: str | None = None
    chunk_rows: int = CHUNK_ROWS
    now: Callable[[], float] = time.time
    retry: Retry = field(default_factory=push_retry)
    set_nx: bool = True  # False: every batch through the script (the benchmark compares both)
    _script: Any = field(default=None, init=False, repr=False)
    _cluster: Any = field(default=None, init=False, repr=False)  # featsync.online.cluster.ClusterWriter
    _set_nx: bool = field(default=False, init=False, repr=False)  # how the next batch is written
    # A --full-refresh: stored values dated after Redis' clock + CLOCK_SKEW are replaced (full_refresh_shape).
    _replace_future: bool = field(default=False, init=False, repr=False)
    # Batches written each way, for tests and curious operators.
    batches: dict[str, int] = field(default_factory=lambda: {"set_nx": 0, "script": 0}, init=False)
    _owned: set[str] = field(default_factory=set, init=False, repr=False)  # view ids whose identity push_rows recorded

    @property
    def batch_rows(self) -> int:
        """Rows per warehouse batch: a Redis Cluster takes CLUSTER_BATCH_ROWS, as its script
        calls hold the rows of one hash slot, about batch rows / 16,384 each."""
        return CLUSTER_BATCH_ROWS if isinstance(self.client, redis.RedisCluster) else BATCH_ROWS

    def views(self, select: Iterable[str] = ()) -> list[FeatureView]:
        return self.project.registry().online_views(select)

    def layout(self, view: FeatureView) -> Layout:
        return layout_of(self.project.registry(), view, self.key_prefix)

    def push(
        self,
        select: Iterable[str] = (),
        dry_run: bool = False,
        full_refresh: bool = False,
        progress: Callable[[PushStats], None] | None = None,
        unchanged: Iterable[str] = (),
        jobs: int = 1,
    ) -> list[PushStats]:
        """Push each selected online view; incremental unless full_refresh or no state yet.

        With jobs > 1, each view's latest rows are read as that many disjoint slices (a hash of
        the entity key computed in the warehouse: featsync.offline.sql.slice_number), each
        pushed by its own thread on its own warehouse connection; the view's state is saved
        once every slice has completed, so a failed slice leaves the watermark where it was.

        A view's watermark is stored only after all of its rows are written, and only if
        Redis kept everything meanwhile (the push's run field is still in the state hash and
        the server's run id is unchanged), so an interrupted, failed or silently lost push
        is never marked done; re-running it finishes the job (writes are idempotent:
        newest event time wins). The `unchanged` views (found by `unchanged()` just before)
        are not read at all on an incremental push: the last push wrote their rows at the
        watermark; only this push's time is recorded.
        """
        skip = set(unchanged)
        views = self.views(select)
        if not views:
            raise NotFoundError("no online feature views to push")
        if not dry_run:
            self.check_reachable()
        queries = compile_latest_rows(self.project, [v.name for v in views])
        with connect(self.project) as warehouse:
            return [
                self._push_view(warehouse, view, queries[view.name], dry_run, full_refresh, progress, view.name in skip, jobs)
                for view in views
            ]

    def _push_view(
        self,
        warehouse: Warehouse,
        view: FeatureView,
        latest_sql: str,
        dry_run: bool,
        full_refresh: bool,
        progress: Callable[[PushStats], None] | None,
        unchanged: bool = False,
        jobs: int = 1,
    ) -> PushStats:
        layout = self.layout(view)
        # The push's own clock: rows dated after it are written, but the watermark never
        # passes it, so rows that change later are still picked up by the next push.
        clock = datetime.fromtimestamp(self.now(), UTC)
        self._replace_future = full_refresh
        run = new_run()
        pushed_before = False
        since = server = newest_event = None
        at_watermark = None  # stored count of latest rows at the watermark, for an unchanged view
        if not dry_run:
            with self._redis_errors(view):
                server = server_identity(self.client)
                raw = claim(self.client, layout, run, clock)
            pushed_before = bool(decode_state(raw))
            if not full_refresh:  # a full refresh ignores (and then overwrites) whatever state is stored
                try:
                    state = PushState.parse(layout, raw)
                except StateError:
                    self._forget(layout, run)
                    raise
                # A watermark after the clock was saved by an older featsync from a row dated
                # in the future: it would skip every later change, so push the view in full.
                if state.watermark is not None and state.watermark <= naive_utc(clock):
                    since = state.watermark
                    newest_event = state.newest_event_time  # incremental: it may be from an earlier push
                    at_watermark = state.at_watermark
        # No state yet: a first push, most keys are absent, so start with SET NX.
        self._set_nx = self.set_nx and not pushed_before
        stats = PushStats(view.name, view.version, dry_run=dry_run, full_refresh=since is None, watermark=_iso(since))
        start = time.perf_counter()
        skip = unchanged and since is not None and at_watermark is not None and not dry_run
        saved = False
        try:
            with self._redis_errors(view), reading(view):
                if skip:
                    seen = Seen()
                elif jobs > 1:
                    seen = self._stream_slices(view, latest_sql, since, stats, clock, dry_run, progress, jobs, start)
                else:
                    params: list[Any] = []
                    sql = changed_since(view, latest_sql, None if since is None else warehouse.bind(since, params))
                    batches = warehouse.arrow_batches(sql, params, self.batch_rows)
                    seen = self._stream(batches, view, stats, clock, dry_run, progress, start)
                newest, at_newest = seen.newest, seen.at_newest
                newest_event = _later(newest_event, seen.newest_event)
                stats.seconds = time.perf_counter() - start
                if skip:
                    stats.at_watermark = at_watermark
                elif newest is not None:
                    stats.watermark = _iso(min(newest, naive_utc(clock)))
                    # Counted only when the watermark is the newest marker itself (not the clock).
                    stats.at_watermark = at_newest if newest <= naive_utc(clock) else 0
                if newest_event is not None:
                    stats.newest_event_time = event_time_text(newest_event)
                if not dry_run:
                    self._save_state(layout, run, server, stats)
                    saved = True
        finally:
            if not dry_run and not saved:
                self._forget(layout, run)
        log.info(
            "pushed %s v%d (%s): %d rows read, %d keys written, %d stale, %d expired (%d keys deleted), %.2fs%s",
            view.name,
            view.version,
            "full" if stats.full_refresh else "incremental",
            stats.rows_read,
            stats.keys_written,
            stats.skipped_stale,
            stats.skipped_expired,
            stats.deleted_expired,
            stats.seconds,
            " (dry run)" if dry_run else "",
        )
        return stats

    def _stream(
        self,
        batches: Iterable[pa.RecordBatch],
        view: FeatureView,
        stats: PushStats,
        clock: datetime,
        dry_run: bool,
        progress: Callable[[PushStats], None] | None,
        start: float,
    ) -> Seen:
        """Write every batch, encoding batch n+1 while Redis runs batch n; what the rows held."""
        seen = Seen()
        in_flight: InFlight | None = None
        if isinstance(self.client, redis.RedisCluster):
            batches = coalesced(batches, self.batch_rows)
        for batch in batches:
            changed, event = self._count(view, batch, stats, clock)
            seen.add(batch, changed, event)
            rows = self._prepare(view, batch, stats, dry_run, clock)
            self._complete(in_flight, stats)
            in_flight = self._start(rows)
            stats.seconds = time.perf_counter() - start
            if progress:
                progress(stats)
        self._complete(in_flight, stats)
        return seen

    def _stream_slices(
        self,
        view: FeatureView,
        latest_sql: str,
        since: datetime | None,
        stats: PushStats,
        clock: datetime,
        dry_run: bool,
        progress: Callable[[PushStats], None] | None,
        jobs: int,
        start: float,
    ) -> Seen:
        """--jobs: the view's rows as `jobs` disjoint slices, pushed at once by as many threads,
        each with its own warehouse connection and its own write state; raises the first
        failure once every slice has stopped (the caller then saves nothing)."""
        lock = threading.Lock()

        def one(number: int) -> tuple[PushStats, Seen]:
            worker = replace(self)  # the same settings, a write state of its own
            worker._set_nx, worker._replace_future = self._set_nx, self._replace_future
            part = PushStats(view.name, view.version, dry_run=dry_run)
            with connect(self.project) as warehouse:
                params: list[Any] = []
                sql = changed_since(view, latest_sql, None if since is None else warehouse.bind(since, params))
                where = f"{slice_number(list(view.entities), jobs, warehouse.adapter_type)} = {number}"
                sql = f"select * from ({sql}) as featsync_slice where {where}"
                batches = warehouse.arrow_batches(sql, params, self.batch_rows)
                seen = worker._stream(batches, view, part, clock, dry_run, None, start)
            with lock:
                for name in ("rows_read", "keys_written", "skipped_stale", "skipped_expired", "deleted_expired", "future_rows"):
                    setattr(stats, name, getattr(stats, name) + getattr(part, name))
                for way, count in worker.batches.items():
                    self.batches[way] += count
                stats.seconds = time.perf_counter() - start
                if progress:
                    progress(stats)
            return part, seen

        with ThreadPoolExecutor(jobs, thread_name_prefix=f"featsync-push-{view.name}") as pool:
            futures = [pool.submit(one, number) for number in range(jobs)]
            wait(futures)
        total = Seen()
        for future in futures:
            total.merge(future.result()[1])  # the first failure is raised here
        return total

    def unchanged(self, select: Iterable[str] = ()) -> list[str]:
        """The selected views with nothing new since their last push: no latest row whose change
        marker is past the watermark, and the latest rows at the watermark's very instant are
        what the online store holds (each live row's key holds that row's value, each expired
        row's key is absent). An incremental push of such a view need not read it, and the push
        gate need not validate it again.

        Counting the rows at the watermark is not enough: a key's latest row replaced by
        another row with the same change marker (a newer event loaded in the same batch, one
        created_at per load) keeps every count equal, and its value would never be pushed.
        So the rows at the watermark (few, usually) are read, encoded as push encodes them,
        and compared with Redis. One query per view over its latest rows (what a push reads
        anyway) and one MGET per batch of rows at the watermark; a view never pushed, or
        whose state does not hold the count, is not unchanged.
        """
        views = self.views(select)
        self.check_reachable()  # an unreachable Redis is said as push says it
        states = {}
        for view in views:
            with self._redis_errors(view):
                try:
                    states[view.name] = read_state(self.client, self.layout(view))
                except StateError:
                    continue  # the push itself reports it
        candidates = [v for v in views if v.name in states and states[v.name].at_watermark is not None]
        if not candidates:
            return []
        queries = compile_latest_rows(self.project, [v.name for v in candidates])
        out = []
        with connect(self.project) as warehouse:
            for view in candidates:
                state = states[view.name]
                params: list[Any] = []
                sql = changed_since(view, queries[view.name], warehouse.bind(state.watermark, params))
                with reading(view), self._redis_errors(view):
                    with closing(iter(warehouse.arrow_batches(sql, params, self.batch_rows))) as batches:
                        if self._online_holds(view, batches, state.watermark, state.at_watermark):
                            out.append(view.name)
        return out

    def _online_holds(self, view: FeatureView, batches: Iterable[pa.RecordBatch], watermark: datetime, expected: int) -> bool:
        """Whether these latest rows changed at or after the watermark are `expected` rows all at
        the watermark (none past it: stop at the first) and are what Redis holds: the encoded
        value under each live row's key, nothing under an expired row's key (push deletes it:
        featsync.online.validity)."""
        layout = self.layout(view)
        now_us = epoch_micros(datetime.fromtimestamp(self.now(), UTC))
        mget = self.client.mget_nonatomic if isinstance(self.client, redis.RedisCluster) else self.client.mget
        seen = 0
        for batch in batches:
            if not batch.num_rows:
                continue
            marker = batch.column(CHANGED_AT)
            seen += batch.num_rows
            if seen > expected or pc.any(pc.greater(marker, pa.scalar(watermark, marker.type))).as_py():
                return False
            _, live = live_rows(view, batch, now_us)
            values = layout.encode_values(batch).to_pylist()
            stored = mget(layout.encode_keys(batch).to_pylist())
            for alive, value, held in zip(live.tolist(), values, stored, strict=True):
                if held != (value if alive else None):
                    return False
        return seen == expected

    def state_key(self, view: FeatureView) -> str:
        return self.layout(view).state_key

    def key_patterns(self, select: Iterable[str] = ()) -> list[str]:
        """SCAN patterns matching every key this pusher writes (data and state), per view."""
        return [f"{self.layout(view).state_key}*" for view in self.views(select)]

    def state(self, view: FeatureView) -> dict[str, str]:
        """The view's push state as stored: watermark, last_push_at, counts of the last push."""
        return read_state(self.client, self.layout(view)).fields

    def _save_state(self, layout: Layout, run: str, server: frozenset[str] | None, stats: PushStats) -> None:
        """Mark the view pushed, unless Redis lost data while it was written: then clear the
        watermark (the next push is a full one) and fail."""
        fields = {
            # push's own clock, as its watermark: no featsync writer records a time after it
            # (freshness judges one later than now a breach: featsync.monitoring.freshness)
            "last_push_at": datetime.fromtimestamp(self.now(), UTC).isoformat(),
            "rows_read": stats.rows_read,
            "keys_written": stats.keys_written,
            "mode": "full" if stats.full_refresh else "incremental",
        }
        if stats.watermark:
            fields["watermark"] = stats.watermark
        if stats.watermark and stats.at_watermark:
            fields[AT_WATERMARK] = stats.at_watermark
        if stats.newest_event_time:  # raised, never lowered (featsync.online.state.save_state)
            fields[NEWEST_EVENT] = datetime.fromisoformat(stats.newest_event_time)
        now = server_identity(self.client)
        restarted = server is not None and now is not None and now != server
        clock = datetime.now(UTC) if stats.full_refresh else None  # a full refresh may repair newest_event_time
        if restarted or not save_state(self.client, layout, run, fields, clock):
            forget_progress(self.client, layout, run, lost=True)
            what = "restarted or failed over" if restarted else "lost the view's push state (restarted empty or flushed)"
            raise LostWritesError(
                f"{describe_client(self.client)} {what} while featsync pushed '{layout.view.name}': the online store "
                "may be missing rows of this view, so the push was not marked done and the next push of it is a full one"
            )

    def _forget(self, layout: Layout, run: str) -> None:
        """Best effort after a failure: remove the push's run field (a stale one is removed a day later anyway)."""
        try:
            forget_progress(self.client, layout, run)
        except (redis.RedisError, StateError):
            pass

    def _count(
        self, view: FeatureView, batch: pa.RecordBatch, stats: PushStats, clock: datetime
    ) -> tuple[datetime | None, datetime | None]:
        """Count a batch's rows and those dated after the clock; its newest change marker
        (naive UTC) and its newest event time not after the clock (aware UTC: freshness must
        not be measured from a row dated in the future)."""
        stats.rows_read += batch.num_rows
        if not batch.num_rows:
            return None, None
        self.layout(view).check_times(batch)  # instants outside the years 1 to 9999, named with their row
        marker, event = batch.column(CHANGED_AT), batch.column(view.timestamp)
        dated = batch.column(dated_at(view))
        late = [pc.greater(c, pa.scalar(naive_utc(clock), c.type)) for c in (dated, event)]
        stats.future_rows += int(pc.sum(pc.fill_null(pc.or_kleene(*late), False)).as_py() or 0)
        # Any precision and zone, as whole microseconds rounded down (featsync.online.layout).
        changed = _newest(marker)
        event = _newest(pc.filter(event, pc.invert(pc.fill_null(late[1], False))))
        return (None if changed is None else naive_utc(changed)), event

    def _prepare(self, view: FeatureView, batch: pa.RecordBatch, stats: PushStats, dry_run: bool, clock: datetime) -> Rows | None:
        """Encode a batch's rows; None when nothing to send. A row no longer valid at the clock
        is not written (`skipped_expired`) but is sent with expire-at EXPIRED: it is its key's
        latest row, so the join at the clock uses no value of that key, and WRITE_NEWER removes
        the stored one unless it is newer (a value pushed earlier, then closed or replaced in
        the warehouse, would otherwise be served forever)."""
        expire_ms, live = live_rows(view, batch, epoch_micros(clock))
        expired = int((~live).sum())
        stats.skipped_expired += expired
        if batch.num_rows == 0:
            return None
        if dry_run:
            stats.keys_written += batch.num_rows - expired
            return None
        if expired:
            expire_ms = np.where(live, expire_ms, EXPIRED)
        layout = self.layout(view)
        shape = full_refresh_shape(layout.value_shape) if self._replace_future else layout.value_shape
        return Rows(layout.encode_keys(batch), layout.encode_values(batch), expire_ms, shape)

    def push_rows(self, view: FeatureView, table: pa.Table, layout: Layout | None = None) -> PushStats:
        """Write rows a client gave (checked by featsync.online.rows.conform) through WRITE_NEWER:
        the same keys, values and expiry as a push of the same rows from the warehouse, and
        an older row never replaces a newer one, whoever wrote it. No watermark is stored:
        the next warehouse push is unaffected (and cannot undo a newer pushed row). `layout`:
        the view's, when the caller holds it (self.layout re-checks the manifest each call)."""
        layout = layout or self.layout(view)
        return self.write_pushed(view, layout, encode_pushed(layout, table, int(self.now() * 1_000_000)))

    def write_pushed(self, view: FeatureView, layout: Layout, pushed: PushedRows) -> PushStats:
        """Write what encode_pushed (or, for a small request, featsync.online.row_push.encode_small)
        gave, then raise the view's newest_event_time."""
        stats = PushStats(view.name, view.version, full_refresh=False)
        start = time.perf_counter()
        stats.rows_read, stats.skipped_expired, stats.skipped_superseded = pushed.given, pushed.expired, pushed.superseded
        if pushed.newest_event is not None:
            stats.newest_event_time = event_time_text(pushed.newest_event)
        if pushed.rows is not None:
            with self._redis_errors(view):
                if layout.view_id not in self._owned:
                    own(self.client, layout)
                    self._owned.add(layout.view_id)
                if isinstance(self.client, redis.RedisCluster):  # one script call per hash slot, never SET NX
                    writer = self._cluster_writer()
                    outcome = writer.finish(writer.start(pushed.rows, False))
                    stats.keys_written += outcome.written
                    stats.skipped_stale += outcome.stale
                else:
                    for reply in self._write_script(pushed.rows):
                        stats.keys_written += reply[0]
                        stats.skipped_stale += reply[1]
                raise_newest(self.client, layout, pushed.newest_event)  # after the rows are online
        stats.seconds = time.perf_counter() - start
        return stats

    def write(self, rows: Rows, stats: PushStats) -> None:
        """Write one batch of encoded rows and wait for it (push overlaps these two steps)."""
        self._complete(self._start(rows), stats)

    def _start(self, rows: Rows | None) -> InFlight | None:
        """Send a batch's commands without waiting for the replies."""
        if rows is None:
            return None
        if isinstance(self.client, redis.RedisCluster):
            return InFlight(rows, [], None, self._set_nx, cluster=self._cluster_writer().start(rows, self._set_nx))
        set_nx = self._set_nx and bool((rows.expire_ms != EXPIRED).any())
        if set_nx:
            nx = rows.take(rows.expire_ms != EXPIRED)  # an expired row must not create its key: the script takes it
            commands = [pack_set_nx(nx.keys, nx.values, nx.expire_ms)]
        else:
            commands = pack_writes(self.script_sha, rows, self.chunk_rows)
        connection = self.client.connection_pool.get_connection()
        try:
            for command in commands:
                connection.send_packed_command(command, check_health=False)
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            self.client.connection_pool.release(connection)
            return InFlight(rows, commands, None, set_nx)  # _complete resends it with retries
        return InFlight(rows, commands, connection, set_nx)

    def _complete(self, in_flight: InFlight | None, stats: PushStats) -> None:
        """Read a sent batch's replies; on connection loss rewrite it (idempotent) with retries.

        After SET NX, the rows whose key existed go through WRITE_NEWER. Whether the next
        batch uses SET NX is decided here, from the share of keys this batch found absent.
        """
        if in_flight is None:
            return
        if in_flight.cluster is not None:
            self._complete_cluster(in_flight, stats)
            return
        rows, replies, connection = in_flight.rows, in_flight.replies, in_flight.connection
        if in_flight.set_nx and connection is not None:
            nx = rows.expire_ms != EXPIRED  # the rows sent through SET NX (_start)
            try:
                created = read_set_nx_replies(connection, int(nx.sum()))
            except FeatsyncError:
                connection.disconnect()  # the rest of the reply stream is unread
                raise
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                created = None  # rewrite the whole batch through WRITE_NEWER below
            finally:
                self.client.connection_pool.release(connection)
            if created is not None:
                self.batches["set_nx"] += 1
                stats.keys_written += int(created.sum())
                self._set_nx = self.set_nx and created.mean() >= SET_NX_MIN_ABSENT
                done = np.zeros(len(rows.keys), dtype=bool)
                done[nx] = created
                if done.all():
                    return
                rows = rows.take(~done)  # keys that existed, and expired rows: through WRITE_NEWER
            replies = self._write_script(rows)
        elif replies is None and connection is not None:
            try:
                replies = [connection.read_response() for _ in in_flight.commands]
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoScriptError):
                # A half-read reply stream must not be reused. NOSCRIPT: Redis lost the script
                # (SCRIPT FLUSH, a restart); _write_script loads it again and resends the batch.
                connection.disconnect()
                self._script = None
            except redis.ResponseError as exc:
                connection.disconnect()
                raise refused(exc) from exc
            finally:
                self.client.connection_pool.release(connection)
        if replies is None:
            replies = self._write_script(rows)
        if not in_flight.set_nx:
            self.batches["script"] += 1
        absent = 0
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise refused(reply)
            written, stale, missing, deleted = reply
            stats.keys_written += written
            stats.skipped_stale += stale
            stats.deleted_expired += deleted
            absent += missing
        if not in_flight.set_nx:
            self._set_nx = self.set_nx and absent >= SET_NX_MIN_ABSENT * len(rows.keys)

    def _write_script(self, rows: Rows | SmallRows) -> list[Any]:
        """WRITE_NEWER over rows, with retries on connection loss (every write is idempotent)."""
        if isinstance(rows, SmallRows):  # one call, framed by redis-py: pack_writes' arguments
            call = lambda: self.client.execute_command(*rows.script_call(self.script_sha))  # noqa: E731
            return self._scripted(lambda: [self.retry.call_with_retry(call, lambda error: None)])

        def send() -> list[Any]:
            commands = pack_writes(self.script_sha, rows, self.chunk_rows)
            return self.retry.call_with_retry(lambda: self._send(commands), lambda error: None)

        return self._scripted(send)

    def _scripted(self, send: Callable[[], list[Any]]) -> list[Any]:
        """Run script calls; when Redis has forgotten the script (NOSCRIPT: SCRIPT FLUSH, a
        restart), load it again and resend them all: every write is idempotent."""
        for _ in range(SCRIPT_LOADS):
            try:
                return send()
            except redis.exceptions.NoScriptError:
                self._script = None
            except redis.ResponseError as exc:
                raise refused(exc) from exc
        raise FeatsyncError(
            f"{describe_client(self.client)} forgot featsync's write script {SCRIPT_LOADS} times in a row "
            "(SCRIPT FLUSH or restarts during the push); nothing of this view was marked done"
        )

    def _cluster_writer(self) -> Any:
        """The Redis Cluster router (featsync.online.cluster), made on first use and kept with its slot map."""
        if self._cluster is None:
            from featsync.online.cluster import ClusterWriter

            self._cluster = ClusterWriter(self.client, WRITE_NEWER, self.chunk_rows)
        return self._cluster

    def _complete_cluster(self, in_flight: InFlight, stats: PushStats) -> None:
        """Read a Redis Cluster batch's replies and write what is left (featsync.online.cluster)."""
        outcome = self._cluster.finish(in_flight.cluster)
        stats.keys_written += outcome.created + outcome.written
        stats.skipped_stale += outcome.stale
        stats.deleted_expired += outcome.deleted
        if outcome.set_nx_rows:
            self.batches["set_nx"] += 1
        if outcome.script_rows and not in_flight.set_nx:
            self.batches["script"] += 1
        if in_flight.set_nx:
            absent = outcome.created / max(outcome.set_nx_rows, 1)
        else:
            absent = outcome.absent / max(outcome.script_rows, 1)
        self._set_nx = self.set_nx and absent >= SET_NX_MIN_ABSENT

    def _send(self, commands: list[list[bytes | memoryview]]) -> list[Any]:
        """Send every packed script call, then read every reply."""
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            for command in commands:
                connection.send_packed_command(command, check_health=False)
            return [connection.read_response() for _ in commands]
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    @property
    def script_sha(self) -> str:
        if self._script is None:
            self._script = self.client.script_load(WRITE_NEWER)
        return self._script.decode() if isinstance(self._script, bytes) else self._script

    @contextmanager
    def _redis_errors(self, view: FeatureView) -> Iterator[None]:
        try:
            yield
        except ForeignValueError as exc:
            raise ForeignValueError(f"feature view '{view.name}' v{view.version}: {exc}", exc.key) from None
        except UNAVAILABLE as exc:
            raise FeatsyncError(
                f"{describe_client(self.client)} went away while pushing '{view.name}' (after retries): "
                f"{str(exc).rstrip('.')}. Nothing of this view was marked done; re-run featsync push to finish."
            ) from exc

    def check_reachable(self) -> None:
        """Fail early, before anything is read or validated, when Redis does not answer."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise FeatsyncError(f"cannot reach {describe_client(self.client)}: {exc}") from exc


def coalesced(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The batches joined into batches of at least `rows` rows (the last may be smaller).

    A Redis Cluster's script calls hold the rows of one hash slot, batch rows / 16,384 of
    them, and a warehouse gives smaller batches than asked for (DuckDB cut a 200k-row latest
    rows query into 75k and 125k): joined, the calls hold twice as many rows, and the
    per-call cost is paid half as often."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            pending, held = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def encode_pushed(layout: Layout, table: pa.Table | pa.RecordBatch, now_us: int) -> PushedRows:
    """Rows a client pushed, as the batch push reduces, encodes (featsync.online.layout) and
    expires (featsync.online.validity) them, in the batch push's order: first the row per key
    the point-in-time join would pick (featsync.online.rows.newest_per_key, featsync.latest_rows'
    order; the others are counted `superseded`), then the validity of that row at the clock
    (past it: counted `expired`, and the key gets nothing, as `featsync push` writes nothing for
    a key whose latest row has expired: an older row of the key is never resurrected). Also
    the newest event time written not after `now_us`, for the view's newest_event_time (a row
    dated in the future is written but, as in the batch push, freshness is not measured from it)."""
    from featsync.online.rows import newest_per_key

    given = table.num_rows
    if not given:
        return PushedRows(None, 0, 0, None)
    view = layout.view
    table = table.combine_chunks().to_batches()[0]  # one batch: the encoders slice plain arrays
    micros = layout.check_times(table)
    keys = layout.encode_keys(table)
    keep = newest_per_key(view, table, keys, lambda: micros)
    superseded = given - len(keep)
    if superseded:
        table, keys, micros = table.take(pa.array(keep)), keys.take(pa.array(keep)), micros[keep]
    expire_ms, live = live_rows(view, table, now_us)
    expired = int((~live).sum())
    if expired:
        mask = pa.array(live)
        table, keys, micros, expire_ms = table.filter(mask), keys.filter(mask), micros[live], expire_ms[live]
    if table.num_rows == 0:
        return PushedRows(None, given, expired, None, superseded)
    past = micros[micros <= now_us]
    newest = from_micros(int(past.max())) if len(past) else None
    rows = Rows(keys, layout.encode_values(table), expire_ms, layout.value_shape)
    return PushedRows(rows, given, expired, newest, superseded)


async def write_newer_async(
    client: Any,
    sha: str,
    rows: Rows | SmallRows,
    chunk_rows: int = CHUNK_ROWS,
    lean: Any = None,
) -> tuple[int, int]:
    """WRITE_NEWER over rows on an asyncio client (the server's /push); (written, stale).

    The calls are framed by pack_writes (Arrow kernels, no per-row Python) and written to
    one pooled connection, as the batch push does on a blocking one; a Redis Cluster gets
    one call per hash slot through redis-py's routing. A small request's rows
    (featsync.online.row_push, never on a cluster) are one call with the same arguments,
    on `lean` (the server's AsyncMget, featsync.online.connections: a round trip without
    redis-py's dispatch, bounded by its own read timeout) when there is one. NoScriptError
    propagates (the caller loads the script and retries); a connection whose replies were
    not all read is dropped.
    """
    import redis.asyncio  # only the server writes asynchronously

    if isinstance(rows, SmallRows):
        if lean is None:
            reply = await client.execute_command(*rows.script_call(sha))
        else:
            try:
                reply = await lean.execute(rows.packed(sha))
            except redis.ResponseError as exc:
                if str(exc).startswith("NOSCRIPT"):
                    raise redis.exceptions.NoScriptError(str(exc)) from None
                raise
        return reply[0], reply[1]
    if isinstance(client, redis.asyncio.RedisCluster):
        pipe = client.pipeline()
        for keys, args in _slot_calls(rows, chunk_rows):
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)  # raised below as Redis said it, not annotated
    else:
        commands = pack_writes(sha, rows, chunk_rows)
        pool = client.connection_pool
        connection = await pool.get_connection()
        try:
            for command in commands:
                await connection.send_packed_command(command, check_health=False)
            replies = [await connection.read_response() for _ in commands]
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
    written = stale = 0
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
        written += reply[0]
        stale += reply[1]
    return written, stale


def _slot_calls(rows: Rows, chunk_rows: int) -> list[tuple[list[bytes], list[bytes | str]]]:
    """The arguments of WRITE_NEWER calls for a Redis Cluster client that routes them itself: a
    script call only touches keys of one hash slot, cut as ClusterWriter cuts its calls
    (featsync.online.cluster.key_slots, and call_starts for the rows of each call)."""
    from featsync.online.cluster import key_slots

    slots = key_slots(rows.keys)
    order = np.argsort(slots, kind="stable")
    starts = call_starts(np.flatnonzero(np.diff(slots[order], prepend=-1)), len(order), chunk_rows)
    keys = rows.keys.to_pylist()
    values = pc.cast(rows.values, pa.binary()).to_pylist()
    expires = rows.expire_ms.astype(str).tolist()
    calls = []
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(order)], strict=True):
        chunk = order[lo:hi].tolist()
        args = [x for i in chunk for x in (values[i], expires[i])]
        calls.append(([keys[i] for i in chunk], [*args, rows.shape]))
    return calls


def pack_writes(
    sha: str, rows: Rows, chunk_rows: int, groups: np.ndarray | None = None, asking: bool = False
) -> list[list[bytes | memoryview]]:
    """EVALSHA calls of WRITE_NEWER in Redis' wire format (RESP), one command per call: slices
    of the one buffer script_calls builds (chunk_rows rows a call; a Redis Cluster passes
    `groups`, the row positions where a hash slot starts, and `asking`: see script_calls)."""
    buffer, at = script_calls(sha, rows, call_starts(groups, len(rows.keys), chunk_rows), asking)
    return [[buffer[lo:hi]] for lo, hi in zip(at[:-1], at[1:], strict=True)]


def call_starts(groups: np.ndarray | None, n: int, chunk_rows: int) -> np.ndarray:
    """Where each script call starts among n rows: at every group start (rows sorted by hash
    slot on a Redis Cluster: a script's keys share a slot; None: one group) and every
    chunk_rows rows within a group. Computed in numpy: a cluster has thousands of groups."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    groups = np.zeros(1, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    sizes = np.diff(groups, append=n)
    within = np.arange(n) - np.repeat(groups, sizes)  # each row's position in its group
    return np.flatnonzero(within % chunk_rows == 0)


def script_calls(sha: str, rows: Rows, starts: np.ndarray, asking: bool = False) -> tuple[memoryview, list[int]]:
    """EVALSHA calls of WRITE_NEWER as one RESP buffer, call i over rows starts[i] up to the
    next start, each after ASKING with `asking` (a Redis Cluster's redirection to a slot
    being imported); and the byte offset where each call starts, then the end.

    Built column-wise with no per-row or per-call Python: each key, each (value, expire-at)
    pair and each call's header is framed by Arrow kernels over the whole batch, then one
    `take` puts the pieces in wire order (header, the call's keys, its rows, the view's
    value shape). A Redis Cluster's calls hold the rows of one hash slot, a dozen or so
    each, so a loop per call would cost more than the rows.
    """
    n_rows, n_calls = len(rows.keys), len(starts)
    sizes = np.diff(starts, append=n_rows).astype(np.int64)
    count = pa.array(sizes)
    count_text = pc.cast(pc.cast(count, pa.string()), pa.binary())
    head = pc.binary_join_element_wise(
        _bytes((ASKING if asking else b"") + b"*"),
        pc.cast(pc.cast(pa.array(4 + 3 * sizes), pa.string()), pa.binary()),
        _bytes(f"\r\n$7\r\nEVALSHA\r\n${len(sha)}\r\n{sha}\r\n$".encode()),
        pc.cast(pc.cast(pc.binary_length(count_text), pa.string()), pa.binary()),
        _bytes(b"\r\n"),
        count_text,
        _bytes(b"\r\n"),
        _bytes(b""),
    )
    tail = pa.array([f"${len(rows.shape)}\r\n{rows.shape}\r\n".encode()], pa.binary())
    row_frames = pc.binary_join_element_wise(_framed(rows.values), _framed(pa.array(rows.expire_ms)), _bytes(b""))
    pieces = pa.concat_arrays([pc.cast(head, pa.binary()), _framed(rows.keys), row_frames, tail])
    # Wire order: call i is [head i, keys of its rows, (value, expire-at) of its rows, tail].
    block = np.cumsum(2 + 2 * sizes) - (2 + 2 * sizes)  # where each call's pieces start
    order = np.empty(2 * n_calls + 2 * n_rows, dtype=np.int64)
    order[block] = np.arange(n_calls)
    call_of_row = np.repeat(np.arange(n_calls), sizes)
    first = block[call_of_row] + 1 + (np.arange(n_rows) - np.asarray(starts, dtype=np.int64)[call_of_row])
    order[first] = n_calls + np.arange(n_rows)
    order[first + sizes[call_of_row]] = n_calls + n_rows + np.arange(n_rows)
    order[block + 1 + 2 * sizes] = n_calls + 2 * n_rows
    wire = pieces.take(pa.array(order))
    _, offsets, data = wire.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(wire) + 1, offset=wire.offset * 4)
    at = np.append(bounds[block], bounds[-1]) - bounds[0]
    return memoryview(data)[bounds[0] : bounds[-1]], at.tolist()


ASKING = b"*1\r\n$6\r\nASKING\r\n"  # Redis Cluster: the next command is for a slot being imported


def pack_set_nx(keys: pa.Array, values: pa.Array, expire_ms: np.ndarray, asking: bool = False) -> list[memoryview]:
    """`SET key value [PXAT t] NX` per row in RESP, built column-wise like pack_writes
    (each after ASKING with `asking`: a Redis Cluster's redirection to a slot being imported)."""
    never = pa.array(expire_ms == 0)
    head = pc.if_else(never, _bytes(b"*4\r\n$3\r\nSET\r\n"), _bytes(b"*6\r\n$3\r\nSET\r\n"))
    if asking:
        head = pc.binary_join_element_wise(_bytes(ASKING), head, _bytes(b""))
    pxat = pc.binary_join_element_wise(_bytes(b"$4\r\nPXAT\r\n"), _framed(pa.array(expire_ms)), _bytes(b""))
    tail = pc.binary_join_element_wise(pc.if_else(never, _bytes(b""), pxat), _bytes(b"$2\r\nNX\r\n"), _bytes(b""))
    rows = pc.binary_join_element_wise(head, _framed(keys), _framed(values), tail, _bytes(b""))
    return [_slice(rows, 0, len(rows))]


def read_set_nx_replies(connection: Any, n: int) -> np.ndarray:
    """Which of n pipelined SET NX wrote their key, read straight off the socket.

    Each reply is one line: +OK (written), or nil ($-1 in RESP2, _ in RESP3) when the key
    existed, or an error. Counting newlines and looking at each line's first byte in numpy
    costs nanoseconds per row, where redis-py's read_response costs over a microsecond.
    Nothing else is pending on the connection (its parser buffer is empty), as every
    earlier reply on it was read in full. A RESP3 push message (only sent to clients that
    opted in, e.g. to client tracking) counts as a lost connection: the batch is rewritten
    through the script.
    """
    first, errors = read_reply_lines(connection, n)
    if errors:  # an error reply, e.g. OOM or NOPERM
        raise FeatsyncError(f"Redis refused a featsync write: {errors[min(errors)]}")
    return first == ord("+")


def read_reply_lines(connection: Any, n: int) -> tuple[np.ndarray, dict[int, str]]:
    """The first byte of each of n one-line replies (read_set_nx_replies), and the text of
    the error ones by position: a Redis Cluster routes on them (MOVED, ASK, TRYAGAIN)."""
    data, starts, ends, first = read_lines(connection, lambda first, ended: ended >= n)
    if (first == ord(">")).any():  # a RESP3 push message (client tracking): read it the slow way
        raise redis.ConnectionError("a RESP3 push message arrived amid SET NX replies")
    if len(ends) != n:
        raise FeatsyncError(f"Redis sent {len(ends)} replies to {n} SET NX commands")
    unexpected = np.flatnonzero((first != ord("+")) & (first != ord("_")) & (first != ord("$")))
    errors = {}
    for i in unexpected.tolist():
        errors[i] = bytes(data[starts[i] : ends[i]]).decode(errors="replace").strip().lstrip("-")
    return first, errors


def _bytes(value: bytes) -> pa.Scalar:
    return pa.scalar(value, pa.binary())


def _framed(array: pa.Array) -> pa.Array:
    """Each element as a RESP bulk string: "$<len>\\r\\n<bytes>\\r\\n"."""
    array = pc.cast(array, pa.string() if pa.types.is_integer(array.type) else pa.binary())
    array = pc.cast(array, pa.binary())
    length = pc.cast(pc.cast(pc.binary_length(array), pa.string()), pa.binary())
    return pc.binary_join_element_wise(_bytes(b"$"), length, _bytes(b"\r\n"), array, _bytes(b"\r\n"), _bytes(b""))


def _slice(array: pa.Array, lo: int, hi: int) -> memoryview:
    """The bytes of elements lo..hi of a binary array, without copying."""
    _, offsets, data = array.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=len(array) + 1, offset=array.offset * 4)
    return memoryview(data)[bounds[lo] : bounds[hi]]


def dated_at(view: FeatureView) -> str:
    """The latest_rows column by which a row counts as dated in the future (DATED_AT)."""
    return DATED_AT if view.valid_to else CHANGED_AT


def changed_since(view: FeatureView, latest_sql: str, watermark: str | None) -> str:
    """The latest rows, with their change marker CHANGED_AT (featsync.latest_rows(changed_at=true):
    naive UTC whatever the columns' types); with a watermark (the SQL of a bound parameter or
    typed literal: Warehouse.bind), only those whose marker reached it (inclusive, so rows
    landing at the very instant of the last push are sent again, harmlessly)."""
    where = "" if watermark is None else f" where {CHANGED_AT} >= {watermark}"
    return f"select * from ({latest_sql}) as featsync_latest{where}"


def _iso(value: datetime | None) -> str | None:
    """A naive UTC watermark as stored in the state hash."""
    return None if value is None else value.isoformat(sep=" ", timespec="microseconds")


def _aware(value: datetime) -> datetime:
    """A warehouse timestamp (naive means UTC) as an aware UTC datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _newest(column: pa.Array | pa.ChunkedArray) -> datetime | None:
    """The newest instant of a timestamp column (aware UTC, whole microseconds rounded down); None if all NULL."""
    present = pc.drop_null(column)
    return from_micros(int(column_micros(present).max())) if len(present) else None


def _count_at(marker: pa.Array, value: datetime) -> int:
    """Rows of a batch whose change marker is `value` (naive UTC), in whole microseconds as _newest rounds."""
    present = pc.drop_null(marker)
    if not len(present):
        return 0
    target = int((value.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    return int((column_micros(present) == target).sum())


def compile_latest_rows(project: Project, views: list[str]) -> dict[str, str]:
    """featsync.latest_rows (with the change marker) for every view: from the compiled-SQL cache
    (Project.compiled) while the project is unchanged, else compiled by one in-process dbt call."""
    templates = {name: f"{{{{ featsync.latest_rows({json.dumps(name)}, changed_at=true) }}}}" for name in views}
    return project.compiled(templates, _compile_inline)


def _compile_inline(project: Project, templates: dict[str, str]) -> dict[str, str]:
    marker = "-- featsync:next-view"
    inline = f"\n{marker}\n".join(templates.values())
    # --no-write-json: the manifest is dbt parse's job (Project.manifest); rewriting it and
    # run_results.json here cost about 0.3 s per push.
    result = project.run_dbt(["compile", "--no-write-json", "--inline", inline], target_path=project.target_path)
    sql = result.result.results[0].node.compiled_code
    return dict(zip(templates, (part.strip() for part in sql.split(marker)), strict=True))
