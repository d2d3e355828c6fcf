"""featsync status: is the online store fresh, and how far behind the warehouse is it?

It goes through push's own SQL, never a second copy of it: the latest rows come from the
featsync.latest_rows macro compiled by push.compile_latest_rows and the change marker from
push.changed_since; the push state is read from Redis by featsync.online.state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from featsync.errors import FeatsyncError
from featsync.monitoring.freshness import OnlineFreshness, format_age, online_freshness, staleness_breach
from featsync.offline.sql import identifier
from featsync.offline.warehouse import Warehouse, connect, reading
from featsync.online.layout import KEY_PREFIX, Layout, online_values
from featsync.online.push import CHANGED_AT, changed_since, compile_latest_rows, dated_at
from featsync.online.state import layout_of, read_state_fields
from featsync.progress import Progress, silent
from featsync.project import Project
from featsync.registry import FeatureView, format_duration
from featsync.results import about, online_store, save_result

SCAN_COUNT = 10_000  # keys per SCAN round trip


# -- status -------------------------------------------------------------------------------


@dataclass
class ViewStatus:
    """Freshness of one feature view, offline and online; times are aware UTC."""

    feature_view: str
    version: int
    online: bool
    entities_offline: int  # entities with a latest row in the warehouse
    newest_event_time: datetime | None  # the newest not after now (rows dated later are future_rows)
    newest_change: datetime | None  # newest change marker not after now (what push's watermark tracks)
    future_rows: int = 0  # latest rows whose event or change time is after now
    last_push_at: datetime | None = None
    watermark: datetime | None = None
    online_newest_event_time: datetime | None = None  # the newest event time written online (the push state)
    online_age_seconds: float | None = None  # now - online_newest_event_time: what the UI and /metrics show
    last_push_mode: str | None = None
    pending_rows: int | None = None  # latest rows changed after the watermark: the next push sends them
    online_keys: int | None = None
    staleness_seconds: float | None = None  # now - newest event time
    lag_seconds: float | None = None  # newest change in the warehouse - watermark
    push_age_seconds: float | None = None  # now - last push
    breaches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: iso(v) if isinstance(v, datetime) else v for k, v in asdict(self).items()}


def status(
    project: Project,
    client: redis.Redis,
    key_prefix: str | None = None,
    select: Iterable[str] = (),
    count_keys: bool = True,
    now: Callable[[], float] = time.time,
    progress: Progress = silent,
) -> list[ViewStatus]:
    """Each selected view's freshness against its monitoring thresholds.

    Cost: one pass of the latest-rows query per view in the warehouse (as a full push
    reads), one HGETALL per view, and with count_keys one SCAN over the key prefix,
    which walks the whole Redis keyspace (SCAN is O(all keys), not O(matches)):
    about a second per million keys; --no-count-keys skips it.
    """
    registry = project.registry()
    views = registry.select(select)
    queries = compile_latest_rows(project, [v.name for v in views])
    instant = datetime.fromtimestamp(now(), UTC)
    online: dict[str, OnlineFreshness] = {}
    rows_read: dict[str, int | None] = {}  # of the last push, as its state records it
    try:
        for view in views:  # judged as the UI and /metrics judge it; a broken state is a breach of its view only
            if view.online:
                state = read_state_fields(client, layout_of(registry, view, key_prefix))
                online[view.name] = online_freshness(view, state, instant, staleness=False)
                count = state.get("rows_read", "")
                rows_read[view.name] = int(count) if count.isascii() and count.isdigit() else None
        layouts = [layout_of(registry, v, key_prefix) for v in views if v.online]
        keys = count_online_keys(client, layouts, progress) if count_keys else {}
    except redis.RedisError as exc:
        raise FeatsyncError(f"cannot read the push state from Redis: {exc}") from exc
    out = []
    with connect(project) as warehouse:
        for view in views:
            fresh = online.get(view.name) or OnlineFreshness(view.name)
            watermark = None if fresh.watermark is None else fresh.watermark.replace(tzinfo=None)  # naive UTC, bound
            with reading(view):
                table = warehouse.fetch_arrow(*status_query(warehouse, view, queries[view.name], watermark, instant))
            row = {name: online_values(table.column(name))[0] for name in table.column_names}
            result = ViewStatus(
                view.name,
                view.version,
                view.online,
                int(row["entities"]),
                utc(row["newest_event"]),
                utc(row["newest_change"]),
                future_rows=int(row["future"] or 0),
                last_push_at=fresh.last_push_at,
                watermark=fresh.watermark,
                last_push_mode=fresh.mode,
                pending_rows=int(row["pending"]) if view.online and watermark else None,
                online_keys=keys.get(layout_of(registry, view, key_prefix).prefix) if view.online else None,
                online_newest_event_time=fresh.newest_event_time,
                online_age_seconds=fresh.age_seconds,
                push_age_seconds=fresh.push_age_seconds,
                breaches=list(fresh.breaches),  # the push state's: never pushed, push age, a field not featsync's
            )
            judge_push = view.online and fresh.readable and fresh.pushed
            _judge_status(result, view, instant, judge_push, rows_read.get(view.name))
            out.append(result)
    store = online_store(registry, client, key_prefix)
    abouts = {r.feature_view: about(registry.feature_view(r.feature_view), store) for r in out}
    save_result(project, "status", {r.feature_view: r.as_dict() for r in out}, now=instant, abouts=abouts)
    return out


def status_query(
    warehouse: Warehouse, view: FeatureView, latest_sql: str, watermark: datetime | None, instant: datetime
) -> tuple[str, list[Any]]:
    """One pass over the latest rows: entities, the newest event and change not after
    `instant`, rows dated after it, and rows changed after the watermark (bound values)."""
    params: list[Any] = []

    def now(zoned: bool = False) -> str:  # positional parameters: one placeholder per use
        return warehouse.time_bound(instant, params, zoned)

    # The event time may be zoned; CHANGED_AT is naive UTC (featsync.latest_rows).
    ts = identifier(view.timestamp)
    compared, zoned = warehouse.time_column(ts, view.column(view.timestamp).type.zoned)
    columns = [
        "count(*) as entities",
        f"max(case when {compared} <= {now(zoned)} then {ts} end) as newest_event",
        f"max(case when {CHANGED_AT} <= {now()} then {CHANGED_AT} end) as newest_change",
        f"count(case when {compared} > {now(zoned)} or {dated_at(view)} > {now()} then 1 end) as future",
    ]
    if watermark is None:
        columns.append("0 as pending")
    else:
        columns.append(f"count(case when {CHANGED_AT} > {warehouse.bind(watermark, params)} then 1 end) as pending")
    sql = f"select {', '.join(columns)} from ({changed_since(view, latest_sql, None)}) as featsync_changes"
    return sql, params


def count_online_keys(client: redis.Redis, layouts: list[Layout], progress: Progress = silent) -> dict[str, int]:
    """Keys per layout prefix (`fs:<view id>:`), from one SCAN over featsync's namespace.

    SCAN walks the whole keyspace whatever its pattern, so one pass buckets every view's
    keys by their prefix (the same length for every view). A view's state hash, `fs:<view id>`
    without the trailing ':', is not counted."""
    prefixes = {layout.prefix.encode(): layout.prefix for layout in layouts}
    counts = dict.fromkeys(prefixes.values(), 0)
    if not layouts:
        return counts
    width = len(layouts[0].prefix)
    progress("counting online keys", 0, None)
    for found, key in enumerate(client.scan_iter(match=f"{KEY_PREFIX}:*", count=SCAN_COUNT), 1):
        prefix = prefixes.get(key[:width])
        if prefix is not None:
            counts[prefix] += 1
        if found % SCAN_COUNT == 0:
            progress("counting online keys", found, None)
    return counts


def _judge_status(
    result: ViewStatus, view: FeatureView, instant: datetime, judge_push: bool = True, rows_read: int | None = None
) -> None:
    """Add the warehouse's breaches; with judge_push (a readable state of a pushed view) also
    lag, a missing watermark and keys online. rows_read: what the last push read, per its state."""
    limits = view.monitoring
    if result.future_rows:
        result.breaches.append(
            f"{result.future_rows:,} latest rows are dated in the future (event or change time after now); "
            "push writes them, but its watermark stops at its own clock"
        )
    if result.newest_event_time is not None:
        result.staleness_seconds = (instant - result.newest_event_time).total_seconds()
    if limits.max_staleness is not None:
        if result.newest_event_time is None:
            result.breaches.append("no rows in the warehouse" if not result.future_rows else "no rows dated before now")
        elif breach := staleness_breach(result.staleness_seconds, limits.max_staleness):
            result.breaches.append(breach)
    if not judge_push:  # the rest needs a readable push state
        return
    if result.watermark is not None and result.newest_change is not None:
        result.lag_seconds = max((result.newest_change - result.watermark).total_seconds(), 0.0)
    elif result.newest_change is not None and rows_read:
        # A push that read rows saves a watermark: it was deleted from the hash, or cleared
        # after writes were lost (featsync.online.state.forget_progress).
        result.breaches.append(
            f"the push state has no watermark although its last push read {rows_read:,} rows (removed from the hash, "
            "or cleared after lost writes): the next push of the view is a full one"
        )
    elif result.newest_change is not None:
        result.lag_seconds = None  # pushed while the view was empty: everything is pending
        result.breaches.append("the last push saw no rows; the warehouse has some now")
    if limits.max_push_lag is not None and result.lag_seconds is not None and result.lag_seconds > limits.max_push_lag:
        result.breaches.append(
            f"online is {format_age(result.lag_seconds)} behind the warehouse "
            f"> max_push_lag {format_duration(limits.max_push_lag)}"
        )
    if result.online_keys is not None and result.online_keys < limits.min_online_keys:
        result.breaches.append(f"{result.online_keys} keys online < min_online_keys {limits.min_online_keys}")


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
