"""Small pushed requests, row by row: the batch path's writes without its fixed cost.

The batch path (featsync.online.rows.conform, then featsync.online.push.encode_pushed and
pack_writes) is column-wise: about 60 Arrow kernel calls per request whatever its size,
which is what makes 1,000-row requests fast and costs a one-row request about 1.5 ms. A
request of at most SMALL_ROWS rows of plain values (JSON's: strings, numbers, booleans,
NULLs; or aware datetimes) goes this way instead, with the same pieces applied to
Python values:

- types: `python_ok` and `python_value` (featsync.online.rows), the per-value rule of the
  batch path's own checked conversion; timestamps given as text are parsed by the same
  Arrow cast, all of a request's at once;
- keys: `Layout.key`, the read side's key builder (equal to `Layout.encode_keys`);
- expiry: `valid_end` and `live_until` (featsync.online.validity), the batch path's own
  functions, on numpy arrays of the request's few rows;
- values: `Layout.encode_rows`, which fills the same numpy records as `encode_values`;
- the write: the same WRITE_NEWER call, with the arguments pack_writes frames.

It never refuses anything itself: a request that is not plain and valid in every respect
(a value of another type, a NULL key, a timestamp outside the years 1 to 9999, two rows of
one key, anything that would be an error) returns None, and the batch path decides, so a
refused request gets the batch path's error, word for word. tests/test_row_push.py checks
with random rows of every type that both paths write the same bytes, or fail the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from featsync.lazy import lazy
from featsync.online.layout import MAX_MICROS, MIN_MICROS, Layout, from_micros
from featsync.online.rows import (
    PUSH_TYPES,
    TIME_TYPE,
    PushRowsError,
    check_columns,
    parse_times,
    push_kind,
    python_ok,
    python_value,
)
from featsync.online.validity import NEVER, epoch_micros, live_until, valid_end
from featsync.registry import FeatureView
from featsync.registry.types import TIMESTAMP

np, pa = lazy("numpy"), lazy("pyarrow")

# Up to this many rows a request is typed and encoded row by row. Measured by
# `bench/push_api.py --sizes` (encoding only, per request, on the loaded 2-core box): the row
# path costs about 170 us + 6 us per row, the batch path about 900 us + 2 us per row, so
# they cross near 200 rows; at 64 the row path still takes half the batch path's time.
SMALL_ROWS = 64
_PLAIN = frozenset({type(None), bool, int, float, str, datetime})


@dataclass(frozen=True)
class TypedRows:
    """A small request's rows typed as `conform` types them, column by column in declared
    order (timestamps as epoch microseconds; None for NULL)."""

    view: FeatureView
    num_rows: int
    columns: dict[str, list[Any]]

    def table(self) -> pa.Table:
        """The Arrow table `conform` gives for the same rows (for the suite's row-level checks)."""
        out = {}
        for column in self.view.columns:
            kind = push_kind(self.view, column)
            values = self.columns[column.name]
            if kind == TIMESTAMP:
                out[column.name] = pa.array(values, pa.int64()).cast(TIME_TYPE)
            else:
                out[column.name] = pa.array(values, PUSH_TYPES[kind])
        return pa.table(out)


def typed_rows(view: FeatureView, rows: Any) -> TypedRows | None:
    """A request of columns ({column: [values]}, Feast's `df`) or of rows (a list of dicts, as
    the stream consumer pushes) of at most SMALL_ROWS plain, valid rows, typed; None for
    anything else (the batch path then decides)."""
    if type(rows) is list and 0 < len(rows) <= SMALL_ROWS and all(type(row) is dict for row in rows):
        names: dict[Any, None] = {}  # as featsync.online.rows.as_table reads rows: every name, a gap is NULL
        for row in rows:
            names.update(dict.fromkeys(row))
        rows = {name: [row.get(name) for row in rows] for name in names}
    if not isinstance(rows, Mapping) or not rows or not all(type(v) is list for v in rows.values()):
        return None
    lengths = {len(v) for v in rows.values()}
    n = lengths.pop()
    if lengths or not 0 < n <= SMALL_ROWS:
        return None
    if not all(type(k) is str for k in rows):
        return None
    try:
        check_columns(view, list(rows))
    except PushRowsError:
        return None
    required = {*view.entities, view.timestamp}
    columns: dict[str, list[Any]] = {}
    texts: list[tuple[list[Any], int, str]] = []  # timestamps given as text: (column, row, text)
    for column in view.columns:
        kind = push_kind(view, column)
        values = rows.get(column.name)
        if kind not in PUSH_TYPES:
            return None
        if values is None:
            columns[column.name] = [None] * n
            continue
        typed = []
        for row, value in enumerate(values):
            if type(value) not in _PLAIN:
                return None
            if value is None:
                if column.name in required:
                    return None
            elif kind == TIMESTAMP:
                if type(value) is str:
                    texts.append((typed, row, value))
                elif type(value) is datetime and value.utcoffset() is not None:
                    value = epoch_micros(value)
                else:
                    return None
            elif not python_ok(kind, value):
                return None
            else:
                value = python_value(kind, value)
            typed.append(value)
        columns[column.name] = typed
    if texts and not _parse_times(texts):
        return None
    for column in view.columns:  # conform refuses these (valid_to may lie beyond: an open end)
        if push_kind(view, column) == TIMESTAMP and column.name != view.valid_to:
            if any(m is not None and not MIN_MICROS <= m <= MAX_MICROS for m in columns[column.name]):
                return None
    return TypedRows(view, n, columns)


def _parse_times(texts: list[tuple[list[Any], int, str]]) -> bool:
    """Put each timestamp given as text in its place as epoch microseconds, parsed by the
    parser `conform` uses (featsync.times.parse_times: one call for the whole request);
    False when one does not parse."""
    try:
        parsed = parse_times(pa.array([text for _, _, text in texts], pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeEncodeError):  # a lone surrogate: not UTF-8
        return False
    for (column, row, _), micros in zip(texts, parsed.view(pa.int64()).to_pylist(), strict=True):
        column[row] = micros
    return True


@dataclass(frozen=True)
class SmallRows:
    """A small request's writes: what encode_pushed's Rows hold, as Python lists."""

    keys: list[bytes]
    values: list[bytes]
    expire_ms: list[int]
    shape: str  # Layout.value_shape

    def script_call(self, sha: str) -> list[Any]:
        """The WRITE_NEWER call (EVALSHA and its arguments) that pack_writes frames for the same rows."""
        args: list[Any] = ["EVALSHA", sha, len(self.keys), *self.keys]
        for value, expire in zip(self.values, self.expire_ms, strict=True):
            args += [value, expire]
        return [*args, self.shape]

    def packed(self, sha: str) -> bytes:
        """script_call in Redis' wire format, framed by hiredis (as redis-py frames it when
        hiredis is installed; the server's lean client needs it)."""
        import hiredis

        return hiredis.pack_command(tuple(self.script_call(sha)))


@dataclass(frozen=True)
class PushedRows:
    """Rows a client pushed, encoded for WRITE_NEWER: what featsync.online.push.encode_pushed
    (column-wise) and encode_small (row by row) give."""

    rows: Any  # featsync.online.push.Rows, or SmallRows; None: nothing to write
    given: int
    expired: int  # rows already past their validity (not written)
    newest_event: datetime | None  # the newest event time written, not after the clock (aware UTC)
    superseded: int = 0  # rows another row of the same key in the request beat (not written)


def encode_small(layout: Layout, typed: TypedRows, now_us: int) -> PushedRows | None:
    """What encode_pushed gives for the same rows; None when the batch path must decide (two
    rows of one key, which encode_pushed reduces to the row the join picks before it checks
    that row's validity: checked here on all rows, expired or not, for the same reason)."""
    view = layout.view
    columns = typed.columns
    n = typed.num_rows
    keys = [layout.key([columns[name][i] for name in view.entities]) for i in range(n)]
    if len(set(keys)) < n:
        return None
    event = columns[view.timestamp]
    valid_to = None
    if view.valid_to:
        valid_to = np.array([NEVER if m is None else m for m in columns[view.valid_to]], dtype=np.int64)
    expire_ms, live = live_until(valid_end(view, np.array(event, dtype=np.int64), valid_to), now_us)
    rows = np.flatnonzero(live).tolist()
    if not rows:
        return PushedRows(None, n, n, None)
    values = layout.encode_rows([event[i] for i in rows], [[columns[name][i] for i in rows] for name, _ in layout.features])
    past = [event[i] for i in rows if event[i] <= now_us]  # freshness is not measured from future rows
    newest = from_micros(max(past)) if past else None
    written = [keys[i] for i in rows]
    return PushedRows(SmallRows(written, values, expire_ms[rows].tolist(), layout.value_shape), n, n - len(rows), newest)
