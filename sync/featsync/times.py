"""The one reading of an instant a user gives as text (docs/time-and-types.md "Where a time
comes in from outside"): pushed rows (a column at once, `parse_times`), and one value at a
time (`parse_time`: request fields, `--now`/FEATSYNC_NOW, drift windows).

The rule is RFC 3339 as Arrow reads it: a zone is required (never guessed), any number of
fraction digits (beyond the sixth cut, which floors to the microsecond), a lower-case 't'
or 'z' read as upper case, a leap second (:60) refused saying so, and the UTC instant
within the years 1 to 9999. pyarrow is imported on first use (featsync.lazy): `featsync get`
with a request field stays light.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from featsync.errors import FeatsyncError, shown
from featsync.lazy import lazy

pa = lazy("pyarrow")
pc = lazy("pyarrow.compute")

# RFC 3339 allows any number of fraction digits and a lower-case 't' and 'z'; Arrow's cast
# to microseconds takes at most 6 digits and upper case only. Digits beyond the sixth are
# cut, which floors the instant to its microsecond (the text's fraction counts forward from
# its second, also before 1970), as the batch push floors nanosecond warehouse times
# (featsync.online.layout.epoch_micros).
_FRACTION = r"^([^.]*:\d\d\.\d{6})\d+"
_LEAP_SECOND = re.compile(r"[Tt ]\d\d:\d\d:60(?:\.\d*)?(?:[Zz]|[+-]\d\d(?::?\d\d)?)$")
EXAMPLE = "2024-03-01T10:00:00Z"


def parse_times(strings: Any) -> Any:
    """Timestamps given as RFC 3339 text (an Arrow string array) as UTC microseconds: the one
    parser of every path; ArrowInvalid for text that is not an instant with a zone."""
    return pc.replace_substring_regex(pc.ascii_upper(strings), _FRACTION, r"\1").cast(pa.timestamp("us", tz="UTC"))


def is_aware(value: Any) -> bool:
    """Whether a datetime (or pandas Timestamp) names an instant: a tzinfo that gives an offset.
    A tzinfo whose utcoffset() is None leaves the value naive (Python's own definition), and
    astimezone() would read it in the machine's zone: refused like no tzinfo at all."""
    return value.tzinfo is not None and value.utcoffset() is not None


def leap_second(text: str) -> str | None:
    """Why a leap second is refused, when `text` is one (else None)."""
    if not _LEAP_SECOND.search(text):
        return None
    return (
        f"{shown(text)} is a leap second (:60), which featsync does not take: its instants are "
        "UTC without leap seconds, as in the warehouse; send 23:59:59.999999 or the next second"
    )


def why_not(text: str) -> str:
    """Why `text` is not an instant by the rule, for a message that names where it came from."""
    leap = leap_second(text)
    if leap:
        return leap
    try:
        parsed: datetime | None = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is None:
        fix = f"{text}Z" if ("T" in text or "t" in text or " " in text) else f"{text}T00:00:00Z"
        return f"{shown(text)} has no time zone; featsync times are UTC, write e.g. {fix}"
    if parsed is not None:
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            return f"{shown(text)} is outside the years 1 to 9999 once converted to UTC"
    return f"{shown(text)} is not an RFC 3339 timestamp with a zone (e.g. {EXAMPLE}) within the years 1 to 9999 in UTC"


def parse_time(text: str, where: str) -> datetime:
    """One instant given as text, as an aware UTC datetime; FeatsyncError '<where>: <why not>'."""
    try:
        value = parse_times(pa.array([text], pa.string()))[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError, ValueError):
        value = None  # OverflowError: the UTC instant leaves the years 1 to 9999
    if not isinstance(value, datetime):
        raise FeatsyncError(f"{where}: {why_not(text)}")
    return value.astimezone(UTC)
