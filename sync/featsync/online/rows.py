"""Rows pushed by a client (FeatureStore.push, POST /push, `featsync push --rows`, the stream
consumer), checked against their feature view before anything is written.

The warehouse path (featsync.online.push) trusts the model's declared contract; rows from a
client do not have one, so this module gives them the same guarantees first:

- columns: exactly the view's declared columns (entities, event timestamp, features), with
  created_timestamp and valid_to optional; an unknown or missing column is refused;
- types: each column converts to its declared kind (featsync.registry.types) exactly, or is
  refused naming the first row and column that does not: an integer feature takes integers
  (or floats with no fraction) in the int64 range, a float feature numbers (an integer only
  within +-2**53, as the warehouse push's Arrow cast), a text feature strings that encode
  as UTF-8 (not a lone surrogate, which a Python str may hold), a boolean true/false only,
  a timestamp an instant with a zone: RFC 3339 text (featsync.times.parse_times) or an aware datetime,
  pandas or Arrow timestamp; a naive one is refused, never guessed (docs/push-api.md);
- ranges: event, created and timestamp-feature instants within the years 1 to 9999 in UTC
  (what every reader represents; valid_to may lie beyond, an open end); no NUL character in
  text (entity keys and features: PostgreSQL's text cannot hold it, so it is refused for
  every destination alike);
- NULL entity keys and NULL event times are refused, naming the row;
- the view's expectation suite (expectations/<view>.json), where its expectations are about
  one row at a time (featsync.online.row_checks).

Everything is checked before the first write, so a refused request writes nothing. The
checked table has the declared columns in declared order, typed as the online codec
(featsync.online.layout) and the offline log (featsync.offline.pushlog) expect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featsync.errors import FeatsyncError, shown
from featsync.online.layout import MAX_MICROS, MIN_MICROS, epoch_micros, utf8
from featsync.registry import Column, FeatureView
from featsync.registry.types import BOOL, FLOAT, INT, TEXT, TIMESTAMP
from featsync.times import is_aware, leap_second, parse_times  # parse_times: the one parser of text times, every path

TO_ONLINE, TO_OFFLINE, TO_BOTH = "online", "offline", "online_and_offline"
DESTINATIONS = (TO_ONLINE, TO_OFFLINE, TO_BOTH)
TIME_TYPE = pa.timestamp("us", tz="UTC")
PUSH_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(), TEXT: pa.string(), TIMESTAMP: TIME_TYPE}
# An integer for a float feature must lie within +-2**53, where every integer is exact as a
# float64. Beyond it some still are (2**60, the int64 minimum -2**63), but accepting those
# would make a value's fate depend on its low bits; Arrow's safe cast (the warehouse push's,
# featsync.online.layout) draws the same line.
_EXACT_FLOAT = 2**53
_INT64 = 2**63


class PushRowsError(FeatsyncError):
    """Pushed rows that do not fit their feature view (the HTTP API answers 422; the stream
    consumer makes a dead letter of the entry)."""


@dataclass(frozen=True)
class Destination:
    online: bool
    offline: bool

    @classmethod
    def parse(cls, to: str) -> Destination:
        if to not in DESTINATIONS:
            raise PushRowsError(f"'to' must be one of {', '.join(DESTINATIONS)}, got {shown(to)}")
        return cls(to in (TO_ONLINE, TO_BOTH), to in (TO_OFFLINE, TO_BOTH))


def as_table(rows: Any, floats: frozenset[str] = frozenset()) -> pa.Table | PyRows:
    """A pandas DataFrame, an Arrow table or record batch, a list of dicts (rows) or a dict of
    lists (columns, Feast's `df` in JSON) as an Arrow table. Lists of Python values are kept as
    they are (pa.array would silently truncate 1.5 into an integer column); `conform` types them.
    `floats`: the float features, whose NaN in a DataFrame stays NaN (`_pandas_nan`)."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, Mapping):
        columns = {str(k): v for k, v in rows.items()}
        lengths = {name: len(v) for name, v in columns.items() if isinstance(v, Sequence) and not isinstance(v, str)}
        if len(lengths) != len(columns):
            bad = next(name for name in columns if name not in lengths)
            raise PushRowsError(f"column '{bad}' must be a list of values, one per row")
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
            raise PushRowsError(f"the columns have different lengths ({shown})")
        return PyRows({name: list(v) for name, v in columns.items()})
    if isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
        names: dict[str, None] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise PushRowsError(f"row {i} is not a mapping of column to value")
            names.update(dict.fromkeys(row))
        return PyRows({name: [row.get(name) for row in rows] for name in names})
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with every extra that pushes
        pd = None
    if pd is not None and isinstance(rows, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(rows, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:  # e.g. [1, 'x'], or a str that is not UTF-8
            if not rows.columns.is_unique:
                raise PushRowsError(f"cannot read the DataFrame's columns: {exc}") from None
            return _pandas_nan(_pandas_columns(rows), rows, floats)
        if not rows.columns.is_unique or not floats & set(table.column_names):  # conform refuses a name given twice
            return table
        return _pandas_nan(PyRows(dict(zip(table.column_names, table.columns, strict=True))), rows, floats)
    raise PushRowsError(
        f"rows must be a pandas DataFrame, an Arrow table, a list of dicts or a dict of lists, not {type(rows).__name__}"
    )


def _pandas_columns(frame: Any) -> PyRows:
    """A DataFrame Arrow cannot read as a whole (an object column of mixed types, a str with a
    lone surrogate, which is not UTF-8): its columns one by one, each as Arrow reads it, except
    the failing ones, kept as Python values for `conform` to type or refuse naming the row."""
    columns: dict[str, list[Any] | pa.Array] = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.Array.from_pandas(frame[name])
        except (pa.ArrowException, TypeError, ValueError):
            columns[str(name)] = frame[name].tolist()
    return PyRows(columns)


def _pandas_nan(columns: PyRows, frame: Any, floats: frozenset[str]) -> PyRows:
    """Arrow reads pandas' NaN as NULL (pandas' missing marker). A float feature's NaN is a
    value, as in a list or an Arrow table and in the warehouse, so its column is read again
    with NaN kept: a numpy float column as it is, an object column as Python values (None
    and pd.NA are NULL). Other kinds keep pandas' meaning: NaN in an integer column that
    pandas made float for its gaps is NULL (docs/push-api.md, "NULL and NaN")."""
    import pandas as pd

    for name in floats & set(columns.columns):
        series = frame[name]
        if isinstance(series.dtype, np.dtype) and series.dtype.kind == "f":  # not pandas' Float64: its NA is NULL
            columns.columns[name] = pa.array(series.to_numpy(), from_pandas=False)
        elif series.dtype == object:
            columns.columns[name] = [None if v is None or v is pd.NA else v for v in series.tolist()]
    return columns


@dataclass(frozen=True)
class PyRows:
    """Columns of Python values, not typed yet: pa.array would silently truncate 1.5 into an
    integer column, so `conform` types them itself, value by value where needed (a column
    may also be an Arrow array already: `_pandas_columns`)."""

    columns: dict[str, list[Any] | pa.Array]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def column(self, name: str) -> list[Any]:
        return self.columns[name]


def conform(view: FeatureView, rows: Any) -> pa.Table:
    """The rows as an Arrow table of the view's declared columns, typed for the online codec;
    PushRowsError naming the row and column of the first problem."""
    table = as_table(rows, frozenset(c.name for c in view.features if c.type.kind == FLOAT))
    names = list(table.column_names)
    check_columns(view, names)
    where = f"feature view '{view.name}'"
    n = table.num_rows
    out: dict[str, pa.Array] = {}
    for column in view.columns:
        kind = push_kind(view, column)
        if column.name not in names:
            out[column.name] = pa.nulls(n, PUSH_TYPES.get(kind, pa.string()))
            continue
        out[column.name] = _convert(view, column.name, kind, table.column(column.name))
    for name in (*view.entities, view.timestamp):
        values = out[name]
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise PushRowsError(f"{where}: row {row}, column '{name}': NULL; entity keys and the event timestamp are required")
    return pa.table(out)


def check_columns(view: FeatureView, names: list[str]) -> None:
    """PushRowsError unless the given column names are the view's declared columns (an
    optional created_timestamp and valid_to may be missing), each once."""
    declared = [c.name for c in view.columns]
    where = f"feature view '{view.name}'"
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise PushRowsError(f"{where}: unknown column '{unknown[0]}' in every row (declared columns: {', '.join(declared)})")
    optional = {view.created_timestamp, view.valid_to} - {None}
    missing = [n for n in declared if n not in names and n not in optional]
    if missing:
        required = ", ".join(n for n in declared if n not in optional)
        raise PushRowsError(f"{where}: column '{missing[0]}' is missing from every row (required: {required})")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise PushRowsError(f"{where}: column '{twice}' is given twice")


def push_kind(view: FeatureView, column: Column) -> str:
    """The kind a pushed column is typed as: its declared kind, except that an entity key is
    an integer or text (its text is the Redis key)."""
    kind = column.type.kind
    if column.name in view.entities:
        return kind if kind in (INT, TEXT) else TEXT
    return kind


def _convert(view: FeatureView, name: str, kind: str, values: Any) -> pa.Array:
    """One column converted exactly to its declared kind, or PushRowsError naming the first bad row."""
    if kind not in PUSH_TYPES:
        raise PushRowsError(f"feature view '{view.name}': column '{name}' is declared {kind}, which cannot be pushed")
    if isinstance(values, list):
        array = _from_python(view, name, kind, values)
    else:
        array = _from_arrow(view, name, kind, values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    if kind == TEXT:
        row = _first(pc.match_substring(array, NUL))
        if row is not None:
            raise _refuse(view, name, kind, row, array[row].as_py())
    elif kind == TIMESTAMP and name != view.valid_to:
        micros = pc.cast(array, pa.int64())
        row = _first(pc.or_(pc.less(micros, MIN_MICROS), pc.greater(micros, MAX_MICROS)))
        if row is not None:
            instant = array.slice(row, 1).cast(pa.string())[0].as_py()
            raise PushRowsError(
                f"feature view '{view.name}': row {row}, column '{name}': {instant} is outside the years 1 to 9999 "
                "in UTC, which featsync handles"
            )
    return array


def _first(bad: pa.Array) -> int | None:
    """The first row where `bad` is true (NULL is not), or None."""
    rows = np.flatnonzero(pc.fill_null(bad, False).to_numpy(zero_copy_only=False))
    return int(rows[0]) if len(rows) else None


# NUL (U+0000): PostgreSQL's text cannot hold it (the offline log's insert fails), so pushed text
# never carries it, whatever the destination: one rule for every engine and path.
NUL = "\x00"


def _refuse(view: FeatureView, name: str, kind: str, row: int, value: Any) -> PushRowsError:
    where = f"feature view '{view.name}': row {row}, column '{name}'"
    if kind in (TEXT, TIMESTAMP) and isinstance(value, str) and not utf8(value):  # repr escapes it: UTF-8
        return PushRowsError(f"{where}: {shown(value)} is not valid text (a lone surrogate does not encode as UTF-8)")
    if kind == TEXT and isinstance(value, str) and NUL in value:
        return PushRowsError(
            f"{where}: {shown(value)} holds a NUL character (\\x00), which PostgreSQL's text cannot store: refused in text"
        )
    if kind == TIMESTAMP and isinstance(value, str) and leap_second(value):
        return PushRowsError(f"{where}: {leap_second(value)}")
    hint = ""
    if kind == TIMESTAMP:
        hint = " (a timestamp given as text needs a zone, e.g. 2024-03-01T10:00:00Z)"
    elif kind == FLOAT and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        hint = " that a float holds exactly (integers within +-2**53 only; send a larger one as a float)"
    return PushRowsError(f"{where}: {shown(value)} is not {_KIND_WORDS[kind]}{hint}")


_KIND_WORDS = {INT: "an integer", FLOAT: "a number", BOOL: "a boolean", TEXT: "a string", TIMESTAMP: "a timestamp with a zone"}


def python_ok(kind: str, value: Any) -> bool:
    """Whether one Python value is acceptable for a kind (the slow path that finds the bad row)."""
    if value is None:
        return True
    if kind == BOOL:
        return isinstance(value, (bool, np.bool_))
    if kind == TEXT:
        return isinstance(value, str) and utf8(value) and NUL not in value
    if kind == INT:
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, (int, np.integer)):
            return -_INT64 <= int(value) < _INT64
        # -2.0**63 is the int64 minimum exactly (Arrow's cast takes it too); 2.0**63 is beyond.
        return isinstance(value, (float, np.floating)) and float(value).is_integer() and -_INT64 <= value < _INT64
    if kind == FLOAT:
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, (int, np.integer)):
            return -_EXACT_FLOAT <= int(value) <= _EXACT_FLOAT
        return isinstance(value, (float, np.floating))
    if kind == TIMESTAMP:
        from datetime import datetime

        if isinstance(value, datetime):
            return is_aware(value)
        if isinstance(value, str):
            if not utf8(value):
                return False
            try:
                parse_times(pa.array([value]))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return False
            return True
        return False
    return False


def _from_python(view: FeatureView, name: str, kind: str, values: list[Any]) -> pa.Array:
    """Python values typed exactly: Arrow infers the column's type in C, and only a column whose
    inferred type may not fit goes through the per-value check, which also finds the bad row."""
    try:
        inferred = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
        inferred = None  # mixed types, or a str not UTF-8: the slow path names the first value that does not fit
    if inferred is not None:
        fast = _fast_python(kind, inferred, values)
        if fast is not None:
            return fast
    return _checked_python(view, name, kind, values)


def _fast_python(kind: str, array: pa.Array, values: list[Any]) -> pa.Array | None:
    """The column converted exactly when its inferred Arrow type makes that certain, else None."""
    t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), PUSH_TYPES[kind])
    if kind in (INT, FLOAT) and any(v.__class__ is bool for v in values):
        return None  # Arrow reads [1.0, True] as doubles: a boolean is not a number here
    if array.type == PUSH_TYPES[kind] and kind != TIMESTAMP:
        return array
    if kind == INT and pa.types.is_integer(t):
        return array.cast(pa.int64())
    if kind == FLOAT and pa.types.is_floating(t):
        return array.cast(pa.float64())
    if kind == FLOAT and pa.types.is_integer(t):
        return array.cast(pa.float64()) if _exact_as_float(array) else None
    if kind == BOOL and pa.types.is_boolean(t):
        return array
    if kind == TEXT and pa.types.is_string(t):
        return array
    if kind == TIMESTAMP and pa.types.is_string(t):
        try:
            return parse_times(array)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    if kind == TIMESTAMP and pa.types.is_timestamp(t):
        if all(v is None or is_aware(v) for v in values):
            return array.cast(TIME_TYPE)
        return None
    return None


def _exact_as_float(array: pa.Array) -> bool:
    """Whether every integer of an integer array lies within +-2**53. Compared by its least and
    greatest values, in the array's own type: abs() would wrap the int64 minimum to itself."""
    bounds = pc.min_max(array).as_py()
    return bounds["min"] is None or (-_EXACT_FLOAT <= bounds["min"] and bounds["max"] <= _EXACT_FLOAT)


def python_value(kind: str, value: Any) -> Any:
    """One value that python_ok accepts, as its column holds it: an integer feature's 2.0 is
    2, a float feature's 2 is 2.0 (timestamps are typed by Arrow: _checked_python)."""
    if value is None:
        return None
    if kind == INT:
        return int(value)
    if kind == FLOAT:
        return float(value)
    return value


def _checked_python(view: FeatureView, name: str, kind: str, values: list[Any]) -> pa.Array:
    for row, value in enumerate(values):
        if not python_ok(kind, value):
            raise _refuse(view, name, kind, row, value)
    if kind in (INT, FLOAT):
        values = [python_value(kind, v) for v in values]
    elif kind == TIMESTAMP:
        strings = [isinstance(v, str) for v in values]
        if any(strings):
            parsed = parse_times(pa.array([v if isinstance(v, str) else None for v in values], pa.string()))
            if all(strings):
                return parsed
            objects = pa.array([None if isinstance(v, str) else v for v in values], TIME_TYPE)
            return pc.if_else(pa.array(strings), parsed, objects)
    return pa.array(values, PUSH_TYPES[kind])


def _from_arrow(view: FeatureView, name: str, kind: str, array: pa.Array) -> pa.Array:
    t = array.type
    if pa.types.is_null(t):
        return pa.nulls(len(array), PUSH_TYPES[kind])
    if pa.types.is_dictionary(t):
        array, t = array.dictionary_decode(), t.value_type
    ok = {
        INT: pa.types.is_integer(t) or pa.types.is_floating(t) or (pa.types.is_decimal(t) and t.scale == 0),
        FLOAT: pa.types.is_integer(t) or pa.types.is_floating(t),
        BOOL: pa.types.is_boolean(t),
        TEXT: pa.types.is_string(t) or pa.types.is_large_string(t),
        TIMESTAMP: pa.types.is_timestamp(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
    }[kind]
    if not ok:
        row = int(np.flatnonzero(array.is_valid().to_numpy(zero_copy_only=False))[0]) if array.null_count < len(array) else 0
        raise PushRowsError(
            f"feature view '{view.name}': row {row}, column '{name}': {shown(array[row].as_py())} ({t}) "
            f"is not {_KIND_WORDS[kind]}"
        )
    if kind == TIMESTAMP and pa.types.is_timestamp(t) and t.tz is None and array.null_count < len(array):
        # A pushed time without a zone is refused, never guessed: as text, as a datetime, and
        # here (a pandas datetime64 column, a naive Arrow column) alike.
        row = int(np.flatnonzero(array.is_valid().to_numpy(zero_copy_only=False))[0])
        raise PushRowsError(
            f"feature view '{view.name}': row {row}, column '{name}': {array[row]} ({t}) is not a timestamp with a "
            f"zone: a pushed timestamp without one is refused, never guessed (pandas: .dt.tz_localize('UTC'); "
            f"Arrow: pa.timestamp('{t.unit}', tz='UTC'))"
        )
    try:
        if kind == TIMESTAMP and pa.types.is_timestamp(t):
            # Any precision and zone as UTC microseconds, rounded down like the batch push
            # (featsync.online.layout.epoch_micros).
            nulls = array.is_null().to_numpy(zero_copy_only=False)
            return pa.array(epoch_micros(array), pa.int64(), mask=nulls).cast(TIME_TYPE)
        if kind == TIMESTAMP:
            return parse_times(pc.cast(array, pa.string()))
        if kind == FLOAT and pa.types.is_integer(t) and not _exact_as_float(array):
            raise pa.ArrowInvalid("integer beyond 2**53")
        return pc.cast(array, PUSH_TYPES[kind])  # safe: fails on truncation and overflow
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = array.to_pylist()
        for row, value in enumerate(values):
            if not python_ok(kind, value) or (kind == TIMESTAMP and isinstance(value, str) and not python_ok(kind, value)):
                raise _refuse(view, name, kind, row, value) from None
        raise PushRowsError(f"feature view '{view.name}': column '{name}' ({t}) does not convert exactly to {kind}") from None


def newest_per_key(
    view: FeatureView, table: pa.Table | pa.RecordBatch, keys: pa.Array, event_micros: Callable[[], np.ndarray]
) -> np.ndarray:
    """Indices of the rows to write: the one row per key that the point-in-time join and the
    batch push's featsync.latest_rows would pick, in key order; `event_micros` gives the event
    times, computed only when a key repeats. The write script compares each row with what
    Redis held before the call, so two rows of one key in one call must be reduced to the
    one that wins first.

    The order is the macros' (featsync._pit_order, docs/training-sets.md "Ties"): the latest
    event time; on equal event times the latest created_timestamp (NULL lowest), then the
    greatest values of the other columns in declared order (NULL lowest, text bytewise as
    UTF-8, false < true, NaN above every number as in SQL). Rows equal in all of those
    (exact duplicates, or differing only in the sign of a zero, which SQL holds equal too)
    go to the last given, an arbitrary but fixed choice where SQL's is arbitrary."""
    n = len(keys)
    if n < 2 or pc.count_distinct(keys).as_py() == n:
        return np.arange(n)
    columns: dict[str, Any] = {"k": keys, "t": event_micros()}
    skip = {*view.entities, view.timestamp}
    ties = [name for name in (view.created_timestamp,) if name] + [c.name for c in view.columns if c.name not in skip]
    for i, name in enumerate(dict.fromkeys(ties)):
        column = table.column(name)
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        # A rank before each value, so that the order needs no null placement (Arrow's puts
        # NaN with the NULLs): 0 NULL, 1 a value, 2 NaN (SQL sorts NaN above every number).
        rank = column.is_valid().cast(pa.int8())
        if pa.types.is_floating(column.type):
            rank = pc.add(rank, pc.fill_null(pc.is_nan(column), False).cast(pa.int8()))
        columns[f"r{i}"], columns[f"v{i}"] = rank, column
    columns["i"] = np.arange(n)
    order = pc.sort_indices(pa.table(columns), [(name, "ascending") for name in columns]).to_numpy()
    sorted_keys = keys.take(pa.array(order))
    last = np.ones(n, dtype=bool)
    last[:-1] = pc.not_equal(sorted_keys.slice(0, n - 1), sorted_keys.slice(1)).to_numpy(zero_copy_only=False)
    return order[last]


def read_rows_file(view: FeatureView, path: Any) -> pa.Table:
    """Rows to push from a parquet or CSV file (`featsync push --rows`). CSV columns are read as
    their declared kinds; timestamps as text, so that `conform` refuses one without a zone
    naming its row (an empty field is NULL)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FeatsyncError(f"rows file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            types = {}
            for column in view.columns:
                kind = push_kind(view, column)
                types[column.name] = pa.string() if kind == TIMESTAMP else PUSH_TYPES.get(kind, pa.string())
            options = pacsv.ConvertOptions(strings_can_be_null=True, column_types=types)
            return pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PushRowsError(f"cannot read rows file {path}: {reason}") from None
    raise FeatsyncError(f"rows file {path} is neither .parquet nor .csv")
