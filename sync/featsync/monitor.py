"""featsync status and verify: is the online store fresh, and does it hold what the warehouse says?

Both go through push's own SQL and rules, never a second copy of them: the latest rows
come from the featsync.latest_rows macro compiled by push.compile_latest_rows, the change
marker from push.changed_since, and which rows belong online (TTL, valid_to) from
push.live_rows. So "consistent" means "what a push of the current warehouse would leave".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import redis

from featsync.errors import FeatsyncError
from featsync.online import KEY_PREFIX, Layout
from featsync.project import Project
from featsync.push import CHANGED_AT, Pusher, changed_since, compile_latest_rows, live_rows
from featsync.registry import FeatureView, Registry, format_duration
from featsync.serving import PRESENT, OnlineReader
from featsync.warehouse import connect

SCAN_COUNT = 10_000  # keys per SCAN round trip
EXAMPLES = 3  # mismatch examples kept per feature


@contextmanager
def reading(view: FeatureView) -> Iterator[None]:
    """The engines' own errors (a table not built, a lost connection) as one clear FeatsyncError."""
    import adbc_driver_manager
    import duckdb

    try:
        yield
    except (duckdb.Error, adbc_driver_manager.Error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FeatsyncError(
            f"cannot read feature view '{view.name}' ({view.relation}) from the warehouse: {reason} "
            "(has dbt built it on this target?)"
        ) from exc


# -- status -------------------------------------------------------------------------------


@dataclass
class ViewStatus:
    """Freshness of one feature view, offline and online; times are aware UTC."""

    feature_view: str
    version: int
    online: bool
    entities_offline: int  # entities with a latest row in the warehouse
    newest_event_time: datetime | None
    newest_change: datetime | None  # newest change marker of the latest rows (what push's watermark tracks)
    last_push_at: datetime | None = None
    watermark: datetime | None = None
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
) -> list[ViewStatus]:
    """Each selected view's freshness against its monitoring thresholds.

    Cost: one pass of the latest-rows query per view in the warehouse (as a full push
    reads), one HGETALL per view, and with count_keys one SCAN over the key prefix,
    which walks the whole Redis keyspace (SCAN is O(all keys), not O(matches)):
    about a second per million keys; --no-count-keys skips it.
    """
    registry = project.registry()
    select = list(select)
    views = [registry.feature_view(n) for n in select] if select else list(registry.feature_views.values())
    pusher = Pusher(project, client, key_prefix=key_prefix)
    queries = compile_latest_rows(project, [v.name for v in views])
    states = {}
    try:
        for view in views:
            states[view.name] = pusher.state(view) if view.online else {}
        keys = count_online_keys(client, [pusher.layout(v) for v in views if v.online]) if count_keys else {}
    except redis.RedisError as exc:
        raise FeatsyncError(f"cannot read the push state from Redis: {exc}") from exc
    out = []
    instant = datetime.fromtimestamp(now(), UTC)
    with connect(project) as warehouse:
        for view in views:
            state = states[view.name]
            watermark = state.get("watermark")
            pending = "0" if watermark is None else f"count(case when {CHANGED_AT} > cast('{watermark}' as timestamp) then 1 end)"
            with reading(view):
                row = warehouse.fetch_arrow(
                    f"select count(*) as entities, max({view.timestamp}) as newest_event, max({CHANGED_AT}) as newest_change, "
                    f"{pending} as pending from ({changed_since(view, queries[view.name], None)}) as featsync_changes"
                ).to_pylist()[0]
            result = ViewStatus(
                view.name,
                view.version,
                view.online,
                int(row["entities"]),
                _utc(row["newest_event"]),
                _utc(row["newest_change"]),
                last_push_at=datetime.fromisoformat(state["last_push_at"]) if "last_push_at" in state else None,
                watermark=_utc(datetime.fromisoformat(watermark)) if watermark else None,
                last_push_mode=state.get("mode"),
                pending_rows=int(row["pending"]) if view.online and watermark else None,
                online_keys=keys.get(pusher.layout(view).prefix) if view.online else None,
            )
            _judge_status(result, view, instant)
            out.append(result)
    return out


def count_online_keys(client: redis.Redis, layouts: list[Layout]) -> dict[str, int]:
    """Keys per layout prefix (`fs:<view id>:`), from one SCAN over featsync's namespace.

    SCAN walks the whole keyspace whatever its pattern, so one pass buckets every view's
    keys by their prefix (the same length for every view). A view's state hash, `fs:<view id>`
    without the trailing ':', is not counted."""
    prefixes = {layout.prefix.encode(): layout.prefix for layout in layouts}
    counts = dict.fromkeys(prefixes.values(), 0)
    if not layouts:
        return counts
    width = len(layouts[0].prefix)
    for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=SCAN_COUNT):
        prefix = prefixes.get(key[:width])
        if prefix is not None:
            counts[prefix] += 1
    return counts


def _judge_status(result: ViewStatus, view: FeatureView, instant: datetime) -> None:
    limits = view.monitoring
    if result.newest_event_time is not None:
        result.staleness_seconds = (instant - result.newest_event_time).total_seconds()
    if limits.max_staleness is not None:
        if result.newest_event_time is None:
            result.breaches.append("no rows in the warehouse")
        elif result.staleness_seconds > limits.max_staleness:
            result.breaches.append(
                f"newest event is {format_age(result.staleness_seconds)} old "
                f"> max_staleness {format_duration(limits.max_staleness)}"
            )
    if not view.online:
        return
    if result.last_push_at is None:
        result.breaches.append("never pushed")
        return
    result.push_age_seconds = (instant - result.last_push_at).total_seconds()
    if result.watermark is not None and result.newest_change is not None:
        result.lag_seconds = max((result.newest_change - result.watermark).total_seconds(), 0.0)
    elif result.newest_change is not None:
        result.lag_seconds = None  # pushed while the view was empty: everything is pending
        result.breaches.append("the last push saw no rows; the warehouse has some now")
    if limits.max_push_lag is not None and result.lag_seconds is not None and result.lag_seconds > limits.max_push_lag:
        result.breaches.append(
            f"online is {format_age(result.lag_seconds)} behind the warehouse "
            f"> max_push_lag {format_duration(limits.max_push_lag)}"
        )
    if limits.max_push_age is not None and result.push_age_seconds > limits.max_push_age:
        result.breaches.append(
            f"last push {format_age(result.push_age_seconds)} ago > max_push_age {format_duration(limits.max_push_age)}"
        )
    if result.online_keys is not None and result.online_keys < limits.min_online_keys:
        result.breaches.append(f"{result.online_keys} keys online < min_online_keys {limits.min_online_keys}")


# -- verify -------------------------------------------------------------------------------


@dataclass
class FeatureCheck:
    """How often one feature's online value differs from what a push of the warehouse would leave."""

    feature: str
    checked: int = 0
    mismatches: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.mismatches / self.checked if self.checked else 0.0

    def add(self, matched: bool, entity: str, online: Any, offline: Any) -> None:
        self.checked += 1
        if not matched:
            self.mismatches += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append({"entity": entity, "online": online, "offline": offline})


@dataclass
class ViewVerify:
    feature_view: str
    version: int
    sampled: int = 0  # entities sampled from the warehouse's latest rows
    present_online: int = 0
    expired_offline: int = 0  # past event time + ttl (or valid_to): push does not write them
    missing_online: int = 0  # live offline, but not (or expired) online
    checks: list[FeatureCheck] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for check, out in zip(self.checks, data["checks"], strict=True):
            out["rate"] = check.rate
            for example in out["examples"]:
                example.update({k: iso(v) if isinstance(v, datetime) else v for k, v in example.items()})
        return data


def verify(
    project: Project,
    client: redis.Redis,
    key_prefix: str | None = None,
    select: Iterable[str] = (),
    sample: int = 1000,
    seed: int = 0,
    now: Callable[[], float] = time.time,
) -> list[ViewVerify]:
    """Sample entities from the warehouse's latest rows and compare them with Redis.

    The sample is the first `sample` entities in md5(keys, seed) order: deterministic for a
    seed, spread over the key space, computed in the warehouse. A row counts as
    consistent when it is expired by push's rule and absent online, or live and online
    with the same event time and values. A row whose expiry falls while verify runs is
    consistent either way.
    """
    if sample < 1:
        raise FeatsyncError(f"--sample must be at least 1, got {sample}")
    pusher = Pusher(project, client, key_prefix=key_prefix)
    views = pusher.views(select)  # online views; names unknown or offline are errors
    if not views:
        raise FeatsyncError("no online feature views to verify")
    queries = compile_latest_rows(project, [v.name for v in views])
    registry = project.registry()
    results = []
    with connect(project) as warehouse:
        for view in views:
            keys = " || '|' || ".join(f"cast({k} as varchar)" for k in view.entities)
            with reading(view):
                batches = list(
                    warehouse.arrow_batches(
                        f"select * from ({queries[view.name]}) as featsync_latest "
                        f"order by md5({keys} || '|{int(seed)}') limit {int(sample)}"
                    )
                )
            table = pa.Table.from_batches(batches) if batches else pa.table({})  # an empty view gives no batch
            results.append(_verify_view(view, table, registry, client, key_prefix, now))
    return results


def _verify_view(
    view: FeatureView,
    table: pa.Table,
    registry: Registry,
    client: redis.Redis,
    key_prefix: str | None,
    now: Callable[[], float],
) -> ViewVerify:
    result = ViewVerify(view.name, view.version, sampled=table.num_rows)
    result.checks = [FeatureCheck(view.timestamp)] + [FeatureCheck(f) for f in view.feature_names]
    if not table.num_rows:
        return result
    start = now()
    batch = table.combine_chunks().to_batches()[0]
    expire_ms, live = live_rows(view, batch, int(start * 1000))
    entity_rows = table.select(list(view.entities)).to_pylist()
    # The reader's TTL check runs at the same instant as push's rule.
    reader = OnlineReader(registry, client, key_prefix, now=lambda: start)
    try:
        response = reader.get(entity_rows, [f"{view.name}:*"])
    except redis.RedisError as exc:
        raise FeatsyncError(f"cannot read from Redis: {exc}") from exc
    finished_ms = int(now() * 1000) + 1
    offline = {name: table.column(name).to_pylist() for name in (view.timestamp, *view.feature_names)}
    online_times = response.event_timestamps[view.name]
    first = view.feature_names[0]
    for i, row in enumerate(entity_rows):
        entity = "|".join(str(row[k]) for k in view.entities)
        status = response.statuses[first][i]
        result.present_online += status == PRESENT
        expiring_now = expire_ms[i] != 0 and int(start * 1000) <= expire_ms[i] <= finished_ms
        if not live[i]:
            result.expired_offline += 1
            for check in result.checks:
                check.add(status != PRESENT, entity, "present" if status == PRESENT else status, "expired")
            continue
        if status != PRESENT:
            result.missing_online += not expiring_now
            for check in result.checks:
                check.add(expiring_now, entity, status, _plain(offline[check.feature][i]))
            continue
        values = {view.timestamp: online_times[i], **{f: response.features[f][i] for f in view.feature_names}}
        for check in result.checks:
            expected, got = _plain(offline[check.feature][i]), values[check.feature]
            check.add(_same(got, expected), entity, got, expected)
    limit = view.monitoring.max_mismatch_rate
    over = [c for c in result.checks if c.rate > limit]
    if over:
        worst = max(over, key=lambda c: c.rate)
        result.breaches.append(
            f"{len(over)} of {len(result.checks)} columns differ for more than max_mismatch_rate {limit:.1%} of "
            f"{result.sampled} sampled entities; worst '{worst.feature}': {worst.rate:.1%}"
        )
    return result


def _plain(value: Any) -> Any:
    """Warehouse values as the online codec returns them: naive timestamps are UTC, decimals floats."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _same(online: Any, offline: Any) -> bool:
    if isinstance(online, float) and isinstance(offline, float) and online != online and offline != offline:
        return True  # NaN stored and read back
    return online == offline and (online is None) == (offline is None)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def format_age(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3.1h, 40.1d; negative when an event time is in the future."""
    if seconds < 0:
        return "-" + format_age(-seconds)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 120:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"
