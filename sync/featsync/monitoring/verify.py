"""featsync verify: does the online store hold what a push of the warehouse would leave?

It goes through push's own SQL and rules, never a second copy of them: the latest rows come
from the featsync.latest_rows macro (push.compile_latest_rows), which rows belong online
(TTL, valid_to) from featsync.online.validity.live_rows, as push decides, and online values
are read by the same OnlineReader as serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import redis

from featsync.errors import BIGINT_MAX, BIGINT_MIN, FeatsyncError, UsageError
from featsync.monitoring.status import iso, utc
from featsync.offline.sql import identifier
from featsync.offline.warehouse import connect, reading
from featsync.online.layout import from_micros, online_values, stored_micros
from featsync.online.push import compile_latest_rows
from featsync.online.serving import PRESENT, OnlineReader
from featsync.online.validity import epoch_micros, live_rows
from featsync.project import Project
from featsync.registry import FeatureView, Registry
from featsync.results import about, online_store, save_result

EXAMPLES = 3  # mismatch examples kept per feature


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
        raise UsageError(f"the sample must be at least 1 entity, got {sample}")
    if sample > BIGINT_MAX:  # sample and seed go into the SQL as 64-bit integers (featsync.errors)
        raise UsageError(f"the sample must be at most {BIGINT_MAX} entities, got {sample}")
    if not BIGINT_MIN <= seed <= BIGINT_MAX:
        raise UsageError(f"the seed must be {BIGINT_MIN} to {BIGINT_MAX}, got {seed}")
    registry = project.registry()
    views = registry.online_views(select)  # names unknown or offline are errors
    if not views:
        raise FeatsyncError("no online feature views to verify")
    queries = compile_latest_rows(project, [v.name for v in views])
    results = []
    with connect(project) as warehouse:
        for view in views:
            text = warehouse.text_type
            keys = " || '|' || ".join(f"cast({identifier(k)} as {text})" for k in view.entities)
            params: list[Any] = []
            seed_sql = warehouse.bind(int(seed), params)
            limit_sql = warehouse.bind(int(sample), params)
            sql = (
                f"select * from ({queries[view.name]}) as featsync_latest "
                f"order by md5({keys} || '|' || cast({seed_sql} as {text})) limit {limit_sql}"
            )
            with reading(view):
                batches = list(warehouse.arrow_batches(sql, params))
            table = pa.Table.from_batches(batches) if batches else pa.table({})  # an empty view gives no batch
            results.append(_verify_view(view, table, registry, client, key_prefix, now))
    store = online_store(registry, client, key_prefix)
    abouts = {r.feature_view: about(registry.feature_view(r.feature_view), store) for r in results}
    save_result(project, "verify", {r.feature_view: r.as_dict() for r in results}, abouts=abouts)
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
    expire_ms, live = live_rows(view, batch, epoch_micros(datetime.fromtimestamp(start, UTC)))
    entity_rows = table.select(list(view.entities)).to_pylist()
    # The reader's TTL check runs at the same instant as push's rule.
    reader = OnlineReader(registry, client, key_prefix, now=lambda: start)
    try:
        response = reader.get(entity_rows, [f"{view.name}:*"])
    except redis.RedisError as exc:
        raise FeatsyncError(f"cannot read from Redis: {exc}") from exc
    finished_ms = int(now() * 1000) + 1
    offline = {name: online_values(table.column(name)) for name in (view.timestamp, *view.feature_names)}
    # The event time as the online store keeps it (a float64 of microseconds: rounded after 2255).
    offline[view.timestamp] = [
        None if value is None else from_micros(stored_micros(epoch_micros(utc(value)))) for value in offline[view.timestamp]
    ]
    online_times = response.event_timestamps[view.name]
    first = view.feature_names[0]
    for i, row in enumerate(entity_rows):
        entity = "|".join(str(row[k]) for k in view.entities)
        status = response.statuses[first][i]
        result.present_online += status == PRESENT
        # Live at start (PXAT after start's ms), but Redis' clock may pass the PXAT during the read.
        expiring_now = expire_ms[i] != 0 and expire_ms[i] <= finished_ms
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
        return utc(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _same(online: Any, offline: Any) -> bool:
    if isinstance(online, float) and isinstance(offline, float) and online != online and offline != offline:
        return True  # NaN stored and read back
    return online == offline and (online is None) == (offline is None)
