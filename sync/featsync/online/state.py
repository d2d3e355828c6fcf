"""Push state in Redis: which view owns a view id, and how far each view has been pushed.

Each feature view version has one state hash, ``fs:<view id>`` (see featsync.online.layout):

- ``identity`` names the (prefix, view, version) that owns the id and ``layout`` the column
  layout its values are written in, so a push refuses an id another view owns (a hash
  collision) and `featsync prune` can tell which ids the registry no longer uses;
- ``run:<id>``: one field per push in progress, written when it claims the id, removed
  when it saves; a push whose field vanished meanwhile wrote into a Redis that lost data;
- the last completed push: ``watermark``, ``last_push_at``, ``rows_read``,
  ``keys_written``, ``mode``;
- ``newest_event_time``, the newest event time written online by any writer (the batch
  push and pushed rows: the API, `push --rows`, the stream consumer), not after the writer's
  clock: what freshness is measured from. It only moves forward, compared and set inside
  Redis (RAISE_NEWEST), so no writer can lower it, whatever the interleaving: a value
  written online stays there under newest-wins, so the newest one online never goes back.
  Two exceptions repair what featsync did not write: a stored value that is not a real
  instant (in featsync's fixed-width text) is replaced by the next raise, and a full
  refresh, which rewrites every key, sets it to the newest it wrote when the stored one is
  not a real instant or is later than the clock when it saves (no featsync writer records
  a time after its own clock; a pushed row raised meanwhile is not after it, so it is kept).

Push writes it; status, verify, the UI and the server's /metrics read it. Anyone who can write ``fs:*`` can
write this hash, so what is read back is parsed into typed values (`PushState`) and
refused with a clear error when it does not parse; it never reaches SQL as text. A key of
another type there (WRONGTYPE) is a StateKeyError (a StateError) naming it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from featsync.errors import FeatsyncError
from featsync.online.layout import Layout
from featsync.registry import FeatureView, Registry

IDENTITY = "identity"
NEWEST_EVENT = "newest_event_time"
AT_WATERMARK = "at_watermark"  # latest rows at the watermark's instant, for Pusher.unchanged
LAYOUT = "layout"
RUN = "run:"  # the prefix of a push-in-progress field
STALE_RUN = timedelta(days=1)  # a run field this old belongs to a push that was killed: removed at the next claim

# Sets newest_event_time of the state hash KEYS[1] to `candidate` unless it holds a later
# one. Both are event_time_text (fixed width, UTC): their text order is time order. A stored
# value that is not a real instant in that shape (a month 13, a February 30th...) was not
# written by featsync and is replaced. `instant` is that check.
_RAISE_NEWEST_LUA = """
local function instant(text)
  local y, mo, d, h, mi, s = string.match(text or '', '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.%d%d%d%d%d%d%+00:00$')
  if not y then
    return false
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  local days = ({31, leap and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[mo]
  return y >= 1 and days ~= nil and d >= 1 and d <= days and tonumber(h) < 24 and tonumber(mi) < 60 and tonumber(s) < 60
end
local function raise_newest(key, candidate)
  local old = redis.call('HGET', key, 'newest_event_time')
  if instant(old) and old >= candidate then
    return 0
  end
  redis.call('HSET', key, 'newest_event_time', candidate)
  return 1
end
"""

# KEYS[1]: the state hash; ARGV[1]: the candidate newest event time; ARGV[2], ARGV[3]: the
# view's identity and layout, recorded when absent (as own does), so that a hash this
# (re)creates, say after a flush, still names its owner. Returns 1 when raised.
RAISE_NEWEST = (
    _RAISE_NEWEST_LUA
    + """
redis.call('HSETNX', KEYS[1], 'identity', ARGV[2])
redis.call('HSETNX', KEYS[1], 'layout', ARGV[3])
return raise_newest(KEYS[1], ARGV[1])
"""
)

# Saves a completed push's state only if this push's run field is still there (and the id
# still names this view): else the Redis lost data during the push. KEYS[1]: the state
# hash; ARGV: identity, run field, the newest event time ('' for none: raised, never
# lowered), for a full refresh the clock at saving ('' otherwise: see the module docstring,
# a stored newest event time not a real instant or after it is replaced, or removed when the
# push wrote none), then field/value pairs. Returns 1 when saved.
SAVE_IF_INTACT = (
    _RAISE_NEWEST_LUA
    + """
if redis.call('HGET', KEYS[1], 'identity') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[2])
local old = redis.call('HGET', KEYS[1], 'newest_event_time')
if ARGV[4] ~= '' and old and (not instant(old) or old > ARGV[4]) then
  redis.call('HDEL', KEYS[1], 'newest_event_time')
end
if ARGV[3] ~= '' then
  raise_newest(KEYS[1], ARGV[3])
end
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
return 1
"""
)


class StateError(FeatsyncError):
    """A view's push state in Redis does not parse, or its key is not a hash (written by
    something other than featsync)."""


class StateKeyError(StateError):
    """A view's state key holds another type than a hash (WRONGTYPE): a full refresh cannot
    repair it (every push claims the hash first); deleting the key does."""


def wrong_type(error: BaseException) -> bool:
    """Whether Redis refused a command because its key holds another type (WRONGTYPE)."""
    return isinstance(error, redis.ResponseError) and "WRONGTYPE" in str(error)  # (a pipeline prefixes its own text)


def state_error(layout: Layout, error: Exception) -> FeatsyncError:
    """The error for Redis refusing a command on the view's state hash: a StateError naming the
    key and what to do when the key is of another type (WRONGTYPE), else Redis' reason."""
    if not wrong_type(error):
        return FeatsyncError(
            f"Redis refused a command on the push state {layout.state_key} of feature view "
            f"'{layout.view.name}' v{layout.view.version}: {error}"
        )
    return StateKeyError(
        f"the push state of feature view '{layout.view.name}' v{layout.view.version} in Redis (key {layout.state_key}) "
        "is not a hash: something other than featsync wrote that key. Delete it (redis-cli DEL "
        f"{layout.state_key}): the next featsync push of the view records it again, as a full push"
    )


@contextmanager
def _state_errors(layout: Layout) -> Iterator[None]:
    """Redis' WRONGTYPE on the state hash as a StateKeyError naming it (state_error)."""
    try:
        yield
    except redis.ResponseError as exc:
        if wrong_type(exc):
            raise state_error(layout, exc) from None
        raise


class UnreadableState(dict[str, str]):
    """A view's push state that could not be read (its key is not a hash): empty, with the
    reason, which freshness shows (featsync.monitoring.freshness) instead of failing a page."""

    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


@dataclass(frozen=True)
class PushState:
    """A view's push state, parsed: what push and status rely on is typed or refused."""

    fields: dict[str, str]  # as stored, without identity, layout and run fields (for display)
    watermark: datetime | None = None  # naive UTC: the change marker pushed up to
    last_push_at: datetime | None = None  # aware UTC
    newest_event_time: datetime | None = None  # aware UTC
    at_watermark: int | None = None  # latest rows at the watermark's instant when it was pushed (None: not counted)

    @classmethod
    def parse(cls, layout: Layout, raw: Mapping[bytes, bytes]) -> PushState:
        fields = decode_state(raw)
        watermark = _timestamp(layout, fields, "watermark")
        last_push_at = _timestamp(layout, fields, "last_push_at")
        newest = _timestamp(layout, fields, NEWEST_EVENT)
        count = fields.get(AT_WATERMARK, "")
        at_watermark = int(count) if count.isascii() and count.isdigit() else None  # anything else: not counted
        return cls(fields, watermark and watermark.replace(tzinfo=None), last_push_at, newest, at_watermark)


def decode_state(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """An HGETALL reply of a state hash (sync or async client) as text: the fields that
    describe the last push (not identity, layout, runs), unparsed (see PushState)."""
    fields = {}
    for key, value in raw.items():
        name = key.decode(errors="replace")
        if name not in (IDENTITY, LAYOUT) and not name.startswith(RUN):
            fields[name] = value.decode(errors="replace")
    return fields


def _timestamp(layout: Layout, fields: Mapping[str, str], name: str) -> datetime | None:
    """A stored instant as an aware UTC datetime (a naive one means UTC)."""
    text = fields.get(name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise StateError(
            f"the push state of feature view '{layout.view.name}' v{layout.view.version} in Redis "
            f"(hash {layout.state_key}, field '{name}') is not a timestamp: {shown!r}; it was not written by "
            "featsync. A full refresh of the view ignores and rewrites it"
        ) from None


def layout_of(registry: Registry, view: FeatureView, key_prefix: str | None = None) -> Layout:
    """The online layout of a view under a key prefix (default: the dbt project's name)."""
    return Layout(key_prefix or registry.project_name, view)


def read_state(client: Any, layout: Layout) -> PushState:
    """The view's push state (empty if never pushed); StateError if it does not parse."""
    with _state_errors(layout):
        return PushState.parse(layout, client.hgetall(layout.state_key))


def read_state_fields(client: Any, layout: Layout) -> dict[str, str]:
    """One view's push state as text, as read_states reads it (for `featsync status`, which judges
    it as the UI does: featsync.monitoring.freshness); a key that is not a hash: an UnreadableState."""
    try:
        reply = client.hgetall(layout.state_key)
    except redis.ResponseError as exc:
        reply = exc
    return _state_fields(layout, reply)


def _state_fields(layout: Layout, reply: Any) -> dict[str, str]:
    """HGETALL's reply as text; an UnreadableState for WRONGTYPE (one broken view does not hide
    the others) or for a hash that another view owns (push's owner_problem: its values are that
    view's, not this one's); any other error reply raised."""
    if wrong_type(reply):
        return UnreadableState(str(state_error(layout, reply)))
    if isinstance(reply, Exception):
        raise reply
    problem = foreign_owner(layout, reply)
    if problem:
        return UnreadableState(problem)
    return decode_state(reply)


def foreign_owner(layout: Layout, raw: Mapping[bytes, bytes]) -> str | None:
    """Why a stored state hash belongs to another view, as claim would refuse it (owner_problem);
    None when it is this view's. A field that is absent is the one claim would record (HSETNX),
    so a hash without identity (never pushed, or only read) is this view's."""
    identity, schema = raw.get(IDENTITY.encode()), raw.get(LAYOUT.encode())
    identity = layout.identity.encode() if identity is None else identity
    return owner_problem(layout, identity, layout.schema.encode() if schema is None else schema)


async def read_states(client: Any, layouts: list[Layout]) -> list[dict[str, str]]:
    """Several views' push states in one pipelined round trip, on an async client (server, UI),
    as text: their readers parse what they show (featsync.monitoring.freshness). A key that is
    not a hash reads as an UnreadableState, so one broken view does not hide the others."""
    if not layouts:
        return []
    pipe = client.pipeline(transaction=False)
    for layout in layouts:
        pipe.hgetall(layout.state_key)
    replies = await pipe.execute(raise_on_error=False)
    return [_state_fields(layout, reply) for layout, reply in zip(layouts, replies, strict=True)]


def new_run() -> str:
    """The field a push marks the state hash with while it writes."""
    return f"{RUN}{secrets.token_hex(8)}"


def claim(client: Any, layout: Layout, run: str, now: datetime) -> dict[bytes, bytes]:
    """Record which view owns the view id before writing under it, refuse an id owned by
    another (a 40-bit hash collision), mark the push in progress (`run`), and return the
    stored state hash as is (parse it with PushState.parse)."""
    pipe = client.pipeline(transaction=False)
    pipe.hsetnx(layout.state_key, IDENTITY, layout.identity)
    pipe.hsetnx(layout.state_key, LAYOUT, layout.schema)
    pipe.hset(layout.state_key, run, now.isoformat())
    pipe.hgetall(layout.state_key)
    with _state_errors(layout):
        raw = pipe.execute()[-1]
    problem = owner_problem(layout, raw.get(IDENTITY.encode()), raw.get(LAYOUT.encode()))
    if problem:
        client.hdel(layout.state_key, run)
        raise FeatsyncError(problem)
    limit = now - STALE_RUN
    stale = [key for key, value in raw.items() if key.startswith(RUN.encode()) and key != run.encode() and _older(value, limit)]
    if stale:
        client.hdel(layout.state_key, *stale)
    return raw


def owner_problem(layout: Layout, raw_identity: bytes | None, raw_schema: bytes | None) -> str | None:
    """Why a view id belongs to another view (None when it is this one's): the message claim raises."""
    owner = (raw_identity or b"").decode(errors="replace")
    schema = (raw_schema or b"").decode(errors="replace")
    if owner == layout.identity and schema == layout.schema:
        return None
    return (
        f"feature view '{layout.view.name}' v{layout.view.version} of '{layout.project}' hashes to the key prefix "
        f"{layout.prefix} that '{owner}' ({schema}) already uses; push it under another key prefix"
    )


def own(client: Any, layout: Layout) -> None:
    """Record which view owns the view id, as claim does, for writers that are not a push run
    (pushed rows, the stream consumer): they write keys but no watermark."""
    pipe = client.pipeline(transaction=False)
    pipe.hsetnx(layout.state_key, IDENTITY, layout.identity)
    pipe.hsetnx(layout.state_key, LAYOUT, layout.schema)
    pipe.hmget(layout.state_key, [IDENTITY, LAYOUT])
    with _state_errors(layout):
        problem = owner_problem(layout, *pipe.execute()[-1])
    if problem:
        raise FeatsyncError(problem)


async def own_async(client: Any, layout: Layout) -> None:
    """`own` on an asyncio client (the server)."""
    pipe = client.pipeline(transaction=False)
    pipe.hsetnx(layout.state_key, IDENTITY, layout.identity)
    pipe.hsetnx(layout.state_key, LAYOUT, layout.schema)
    pipe.hmget(layout.state_key, [IDENTITY, LAYOUT])
    with _state_errors(layout):
        problem = owner_problem(layout, *(await pipe.execute())[-1])
    if problem:
        raise FeatsyncError(problem)


def _older(value: bytes, limit: datetime) -> bool:
    try:
        return datetime.fromisoformat(value.decode()) < limit
    except (ValueError, TypeError):
        return True  # not featsync's: not worth keeping


def event_time_text(value: datetime) -> str:
    """How newest_event_time is stored: UTC, microseconds, '+00:00' (fixed width, so that the
    scripts above compare instants by comparing text)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def raise_newest(client: Any, layout: Layout, newest: datetime | None) -> None:
    """Record that rows up to `newest` (aware UTC, not after the writer's clock) were written
    online, unless a later time is recorded: for writers that save no push (pushed rows)."""
    call = raise_newest_call(layout, newest)
    if call is not None:
        with _state_errors(layout):
            client.execute_command("EVAL", RAISE_NEWEST, *call)


def raise_newest_call(layout: Layout, newest: datetime | None) -> tuple[Any, ...] | None:
    """RAISE_NEWEST's key count, key and arguments for `newest`, after EVAL and the script
    (raise_newest) or EVALSHA and its SHA1 (the server's POST /push, featsync.online.push_api,
    which sends it once its writes succeeded); None when there is nothing to raise. The
    view's identity and layout go along: a hash recreated after a flush still names its owner."""
    if newest is None:
        return None
    return (1, layout.state_key, event_time_text(newest), layout.identity, layout.schema)


def save_state(client: Any, layout: Layout, run: str, fields: Mapping[str, Any], full_refresh: datetime | None = None) -> bool:
    """Record a completed push; called only after every row of the view was written.

    newest_event_time (an aware datetime) is raised, never lowered (pushed rows may have
    written newer ones meanwhile); after a full refresh, `full_refresh` is the clock as it
    saves, and a stored newest_event_time that is not a real instant or is after it is
    replaced (see the module docstring). Saved only if this push's run field is still in the
    hash: False when it is gone (Redis restarted empty, was flushed, or failed over to a
    replica that missed it)."""
    newest = fields.get(NEWEST_EVENT)
    args = [x for key, value in fields.items() if key != NEWEST_EVENT for x in (key, str(value))]
    text = "" if newest is None else event_time_text(newest)
    clock = "" if full_refresh is None else event_time_text(full_refresh)
    with _state_errors(layout):
        return bool(client.eval(SAVE_IF_INTACT, 1, layout.state_key, layout.identity, run, text, clock, *args))


def forget_progress(client: Any, layout: Layout, run: str, lost: bool = False) -> None:
    """Remove a push's run field; after lost writes also the watermark, so that the next
    push of the view is a full one."""
    fields = [run, "watermark"] if lost else [run]
    with _state_errors(layout):
        client.hdel(layout.state_key, *fields)
