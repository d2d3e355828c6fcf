"""Online freshness from the push state alone: what the UI and the server's /metrics show.

`featsync status` measures freshness from the warehouse (one query per view); this module
measures it from what push recorded in Redis (one HGETALL per view), so that a page or a
Prometheus scrape costs no warehouse query. Both judge against the same thresholds of the
view's `monitoring` meta with the same rules and wording (the breach functions below).

Anyone who can write `fs:*` can write the push state: a time in it that does not parse (or
leaves the years 1 to 9999 in UTC), a time of it later than now (beyond CLOCK_SKEW: no
featsync writer records a time after its own clock), a state key that is not a hash, or a hash
another view owns (featsync.online.state.foreign_owner, push's refusal), is a breach naming the
field or key, and the time is unknown (no gauge); never an error on the
page or scrape. `featsync status` judges the push state with this function too, so the CLI,
the UI and /metrics say the same of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from featsync.errors import shown
from featsync.online.state import NEWEST_EVENT
from featsync.online.validity import CLOCK_SKEW  # a writer's clock this far ahead of the reader's: skew, not a breach
from featsync.registry import FeatureView, format_duration


@dataclass
class OnlineFreshness:
    """How fresh a view is online; times are aware UTC, ages in seconds (negative: in the future)."""

    feature_view: str
    newest_event_time: datetime | None = None  # the newest event time push wrote online
    last_push_at: datetime | None = None
    watermark: datetime | None = None
    mode: str | None = None  # of the last push: full or incremental
    age_seconds: float | None = None  # now - newest event time pushed
    push_age_seconds: float | None = None  # now - last push
    breaches: list[str] = field(default_factory=list)
    readable: bool = True  # False: the state key is not a hash, or a field of it is not a time

    @property
    def pushed(self) -> bool:
        return self.last_push_at is not None

    @property
    def stale(self) -> bool:
        return bool(self.breaches)


def online_freshness(view: FeatureView, state: Mapping[str, str], now: datetime, staleness: bool = True) -> OnlineFreshness:
    """Judge a view's push state (featsync.online.state.read_states) against its thresholds at `now`.

    staleness=False leaves max_staleness unjudged (`featsync status` judges it from the warehouse)."""
    result = OnlineFreshness(view.name)
    problem = getattr(state, "problem", None)  # featsync.online.state.UnreadableState
    if problem:
        result.breaches.append(problem)
        result.readable = False
        return result
    result.newest_event_time = _stored_instant(state, NEWEST_EVENT, now, result.breaches)
    result.last_push_at = _stored_instant(state, "last_push_at", now, result.breaches)
    result.watermark = _stored_instant(state, "watermark", now, result.breaches)
    result.readable = not result.breaches
    result.mode = state.get("mode")
    limits = view.monitoring
    if result.newest_event_time is not None:  # pushed rows (POST /push, featsync stream) set it too
        result.age_seconds = (now - result.newest_event_time).total_seconds()
    if result.last_push_at is None:
        if not state.get("last_push_at"):
            result.breaches.append("never pushed")
        return result
    result.push_age_seconds = (now - result.last_push_at).total_seconds()
    if result.age_seconds is not None and staleness:
        breach = staleness_breach(result.age_seconds, limits.max_staleness)
        if breach:
            result.breaches.append(breach)
    breach = push_age_breach(result.push_age_seconds, limits.max_push_age)
    if breach:
        result.breaches.append(breach)
    return result


def _stored_instant(state: Mapping[str, str], name: str, now: datetime, breaches: list[str]) -> datetime | None:
    """A time of the push state; None, with a breach naming the field, when it is not one or is
    later than `now` beyond CLOCK_SKEW (no featsync writer records a time after its own clock:
    push would not trust such a watermark either, and pushes the view in full)."""
    text = state.get(name)
    value = parse_instant(text)
    if text and value is None:
        breaches.append(
            f"push state field '{name}' is not a time: {shown(text)} (not written by featsync; "
            "featsync push --full-refresh of the view rewrites it)"
        )
    elif value is not None and value > now + CLOCK_SKEW:
        breaches.append(
            f"push state field '{name}' is in the future: {shown(text)} (no featsync writer "
            "records a time after its clock; featsync push --full-refresh of the view rewrites it)"
        )
        return None
    return value


def staleness_breach(age_seconds: float, max_staleness: int | None) -> str | None:
    """The breach of a newest event `age_seconds` old, or None (no limit, or within it)."""
    if max_staleness is None or age_seconds <= max_staleness:
        return None
    return f"newest event is {format_age(age_seconds)} old > max_staleness {format_duration(max_staleness)}"


def push_age_breach(age_seconds: float, max_push_age: int | None) -> str | None:
    if max_push_age is None or age_seconds <= max_push_age:
        return None
    return f"last push {format_age(age_seconds)} ago > max_push_age {format_duration(max_push_age)}"


def parse_instant(text: Any) -> datetime | None:
    """An ISO time from the push state or a recorded result as aware UTC (naive means UTC); None
    when it is not one, or when its UTC instant leaves the years 1 to 9999 (OverflowError)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


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
