"""When a latest row is valid online: the point-in-time join's rule, at the clock's instant.

The rule is the macro's (``featsync._pit_still_valid`` in package/macros/point_in_time_join.sql):
a row applies at instant s when

    event_ts >= s - ttl      inclusive; a view without a ttl has no such bound
    s < valid_to             exclusive; SCD2 views only; a NULL valid_to has no bound

This module states it once, in microseconds, for every online path: push (which rows it
writes, and each key's expiry), serving (the read-time re-check of the ttl against the
stored event time) and verify (which rows belong online). As one bound:

    valid at s  <=>  s < end,   end = min(event_us + ttl_us + 1, valid_to_us)

Redis expires keys by its millisecond clock: a key with ``PXAT p`` is served while
floor(s / 1000) <= p, that is for s < (p + 1) * 1000. So that a value never outlives the
instant the join stops using it, p = floor(end / 1000) - 1: the key goes up to 1 ms early,
never late. A row is written only while p is after the push's own millisecond (Redis
drops a key set with a PXAT already past); a latest row past it removes what its key holds
unless that is newer (EXPIRED).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from featsync.lazy import lazy
from featsync.online.layout import epoch_micros as _micros  # any precision and zone, rounded down
from featsync.registry import FeatureView

np, pa, pc = lazy("numpy"), lazy("pyarrow"), lazy("pyarrow.compute")  # push's batches only: reads never import them

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = 2**63 - 1  # np.iinfo(np.int64).max: an end (us) for a row that never stops being valid
NO_EXPIRY = 0  # the PXAT that push sends for "no expiry" (WRITE_NEWER and SET NX both read 0 so)
# The PXAT push sends for a latest row no longer valid at its clock: WRITE_NEWER writes
# nothing for it and deletes the key's stored value unless that is newer (the join at the
# clock no longer uses any value of the key, but a newer one, e.g. pushed, stays). Never SET NX.
EXPIRED = -1
# A writer's clock this far ahead of a reader's is skew, not a time in the future: the margin
# by which freshness tolerates a stored time after its clock, and beyond which a full refresh
# takes a stored event time for a future date to correct (featsync.online.push.WRITE_NEWER).
CLOCK_SKEW = timedelta(minutes=5)


def valid_end_us(view: FeatureView, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Each row's end of validity in epoch microseconds (exclusive); NEVER without a bound."""
    event_us = _micros(batch.column(view.timestamp)) if view.ttl_seconds else np.zeros(batch.num_rows, dtype=np.int64)
    valid_to_us = None
    if view.valid_to:
        valid_to = batch.column(view.valid_to)
        has_end = pc.is_valid(valid_to).to_numpy(zero_copy_only=False)
        valid_to_us = np.where(has_end, _micros(pc.fill_null(valid_to, pa.scalar(0, valid_to.type))), NEVER)
    return valid_end(view, event_us, valid_to_us)


def valid_end(view: FeatureView, event_us: np.ndarray, valid_to_us: np.ndarray | None) -> np.ndarray:
    """The rule itself, on event times and valid_to (NEVER where a row has none) as epoch
    microseconds: a warehouse batch (valid_end_us) and a small pushed request, typed row by
    row (featsync.online.row_push), both come here."""
    end = np.full(len(event_us), NEVER, dtype=np.int64)
    if view.ttl_seconds:
        end = event_us + (view.ttl_seconds * 1_000_000 + 1)
    if view.valid_to and valid_to_us is not None:
        end = np.minimum(end, valid_to_us)
    return end


def expire_at_ms(end_us: np.ndarray) -> np.ndarray:
    """The PXAT of each row: the last whole millisecond in which it is still valid (0: never).
    A validity that ends in the epoch's second millisecond would come out as 0, which reads as
    "never": it is before every clock, so it is EXPIRED instead (as every end before it is)."""
    last = np.floor_divide(end_us, 1000) - 1
    return np.where(end_us == NEVER, NO_EXPIRY, np.where(last == NO_EXPIRY, EXPIRED, last))


def live_rows(view: FeatureView, batch: pa.RecordBatch | pa.Table, now_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(PXAT ms, live mask): the rows push writes at now_us, and their keys' expiry.

    A row is live when it never expires or its PXAT is after now's millisecond; verify
    uses the same function, so both agree on which rows belong online.
    """
    return live_until(valid_end_us(view, batch), now_us)


def live_until(end_us: np.ndarray, now_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(PXAT ms, live mask) of rows whose validity ends at end_us (valid_end)."""
    expire_ms = expire_at_ms(end_us)
    return expire_ms, (expire_ms == NO_EXPIRY) | (expire_ms > now_us // 1000)


def epoch_micros(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact, no float rounding)."""
    return (instant - _EPOCH) // timedelta(microseconds=1)


def oldest_valid_event_us(ttl_us: int | None, now_us: int) -> int | None:
    """The read-time re-check: a stored value is valid at now_us when its event time is at or
    after this (the ttl half of the rule: now < event + ttl + 1); None without a ttl.

    A value stores no valid_to; its key's PXAT (above) ends it, up to 1 ms early.
    """
    return None if ttl_us is None else now_us - ttl_us
