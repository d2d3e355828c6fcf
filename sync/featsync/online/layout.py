"""The online layout: Redis keys and values for feature rows, encoded column-wise.

One Redis string per (key prefix, feature view, version, column layout, entity key):
`fs:<view id>:<k1>|<k2>...`, whose value is the event time, a null bitmap and the features
in declared order (or a compact form without the bitmap). The byte-level layout, why it is
this short, and how times are rounded are documented once, in docs/internals.md ("The online
layout"); this module is its only implementation (`Layout.encode_keys`/`encode_values` for a whole
Arrow batch, `encode_rows` for a few rows of a small pushed request, both filling the same
numpy records (`_records`), `decode_columns`/`decode` for reads) and `Layout.view_id` its only
naming rule.
"""

from __future__ import annotations

import base64
import hashlib
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from featsync.errors import FeatsyncError, shown
from featsync.lazy import lazy
from featsync.registry import FeatureView
from featsync.registry.types import BOOL, FLOAT, INT, TEXT, TIMESTAMP

np, pa, pc = lazy("numpy"), lazy("pyarrow"), lazy("pyarrow.compute")  # push's encoding only: reads use struct

KEY_PREFIX = "fs"
VIEW_ID_CHARS = 8  # 40 bits in base32
FIXED_KINDS = {"int": "<i8", "float": "<f8", "timestamp": "<i8", "bool": "u1"}
_STRUCT_CODES = {"int": "q", "float": "d", "timestamp": "q", "bool": "?"}  # the same widths, for reads
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A full value's event time: a float64 of microseconds, exact within +-2**53 (1684-07-28 to
# 2255-06-05), rounded to the nearest double outside (2 to 32 us apart: docs/internals.md). The
# last microseconds of the year 9999 round up into the year 10000, so a read clamps the time
# to MAX_MICROS: what was pushed is never later than that.
_EVENT_TIME = struct.Struct(">d")
_EVENT_SECONDS = struct.Struct(">I")  # the compact form
_TEXT_LENGTH = struct.Struct("<I")  # before each text feature's UTF-8 bytes
_TEXT_LENGTH_DTYPE = "<u4"  # the same, for numpy
# The instants every reader can represent (Python's datetime: years 1 to 9999), in UTC microseconds.
MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# The event times a full value can hold: a pushed time in the years 1 to 9999 as a double (both
# ends are doubles; rounding keeps every pushed time within them). Anything else (NaN, +-inf,
# -1e300) was not written by featsync: refused at read, never decoded (Layout._bad_time).
_STORED_MIN, _STORED_MAX = float(MIN_MICROS), float(MAX_MICROS)
_UNIT_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
# What a NULL feature holds in its slot (the null bitmap says it is NULL).
NULL_FILL: dict[str, object] = {INT: 0, FLOAT: 0.0, BOOL: False, TEXT: "", TIMESTAMP: 0}
_ARROW_TYPES = {INT: "int64", FLOAT: "float64", BOOL: "bool_", TEXT: "string"}  # pyarrow's type factories


class StoredValueError(FeatsyncError):
    """A value in Redis that cannot be in the layout it is read with: refused, never decoded."""


@dataclass(frozen=True)
class Layout:
    """How one feature view version is laid out in Redis."""

    project: str
    view: FeatureView

    @property
    def identity(self) -> str:
        """What the view id stands for (with `schema`); stored in the state hash to detect a collision."""
        return f"{self.project}/{self.view.name}/v{self.view.version}"

    @cached_property
    def schema(self) -> str:
        """Everything the stored bytes depend on: the entity columns in key order, then each
        feature's name and codec kind in declared order, e.g. 'user_id;amount:int,label:text'."""
        features = ",".join(f"{name}:{kind}" for name, kind in self.features)
        return f"{','.join(self.view.entities)};{features}"

    @cached_property
    def view_id(self) -> str:
        """40 bits of BLAKE2b over (project, view, version, schema) in base32: the same in every
        process without coordination; a push refuses an id another view already owns.

        The schema is part of it, so a view whose columns change (reordered, added, retyped)
        without a new version writes new keys: no reader ever decodes a value with another
        layout than the one it was written in, and a reader on the old registry keeps
        reading the old keys until `featsync prune` removes them."""
        text = f"{self.project}\0{self.view.name}\0{self.view.version}\0{self.schema}"
        digest = hashlib.blake2b(text.encode(), digest_size=5)
        return base64.b32encode(digest.digest()).decode().lower()

    @property
    def state_key(self) -> str:
        return f"{KEY_PREFIX}:{self.view_id}"

    # Cached: a read asks for these on every request (cached_property writes the instance
    # __dict__ directly, which a frozen dataclass allows).
    @cached_property
    def prefix(self) -> str:
        return f"{self.state_key}:"

    @cached_property
    def features(self) -> tuple[tuple[str, str], ...]:
        """(feature name, codec kind) in declared order; the registry refused views with others."""
        kinds = []
        for column in self.view.features:
            problem = column.type.online_problem
            if problem:
                raise FeatsyncError(f"feature view '{self.view.name}': feature '{column.name}': {problem}")
            kinds.append((column.name, column.type.kind))
        return tuple(kinds)

    def key(self, entity_values: Sequence[object]) -> bytes:
        """The key of one entity, for reads; the same text encode_keys builds for a batch."""
        return (self.prefix + "|".join(_key_part(v) for v in entity_values)).encode()

    def encode_keys(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        parts = []
        for name in self.view.entities:
            column = self._key_column(batch, name)
            if pa.types.is_string(column.type) and pc.any(pc.match_substring_regex(column, r"[\\|]")).as_py():
                column = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), "|", "\\|")
            parts.append(column)
        return pc.binary_join_element_wise(pa.scalar(self.prefix), *_interleave(parts, "|"), "")

    def _key_column(self, batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
        """An entity column as text: strings as they are, integers in decimal. Anything else is
        refused, naming the row: a float key would be looked up by its text ('nan', '1.0'),
        which no reader asking for an integer or a string could ever match."""
        column = batch.column(name)
        kind = column.type
        where = f"feature view '{self.view.name}': entity column '{name}'"
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise FeatsyncError(f"{where} is NULL in the row {self.describe_row(batch, row)}")
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.cast(column, pa.string())
        if pa.types.is_integer(kind) or (pa.types.is_decimal(kind) and kind.scale == 0):
            try:
                return pc.cast(pc.cast(column, pa.int64()), pa.string())
            except pa.ArrowInvalid:
                raise FeatsyncError(f"{where} holds integers beyond the 64-bit range") from None
        if pa.types.is_floating(kind):
            bad = np.flatnonzero(~pc.is_finite(column).to_numpy(zero_copy_only=False))
            row = int(bad[0]) if len(bad) else 0
            raise FeatsyncError(
                f"{where} holds {shown(column[row].as_py())} in the row {self.describe_row(batch, row)}: it is {kind}, and "
                "entity keys are strings or integers; cast it in the model"
            )
        raise FeatsyncError(
            f"{where} is {kind} (e.g. {shown(column[0].as_py())} in the row {self.describe_row(batch, 0)}); "
            "entity keys are strings or integers; cast it in the model"
        )

    def describe_row(self, batch: pa.RecordBatch | pa.Table, row: int) -> str:
        """A row of a batch as people find it in the warehouse: its entity keys and event time."""
        names = [n for n in (*self.view.entities, self.view.timestamp) if n in batch.schema.names]
        return "(" + ", ".join(f"{n}={_shown(batch.column(n), row)}" for n in names) + ")"

    def check_times(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Refuse a batch whose event or created times fall outside the years 1 to 9999 (valid_to
        may: Postgres' 'infinity' is a common open end); the event times, as `micros` gives them."""
        micros = self.micros(batch, self.view.timestamp)
        created = self.view.created_timestamp
        if created and created in batch.schema.names:
            self.micros(batch, created)
        return micros

    def micros(self, batch: pa.RecordBatch | pa.Table, name: str) -> np.ndarray:
        """A timestamp column as UTC microseconds (NULL as 0); values outside the years 1 to 9999
        are refused, naming the row."""
        column = batch.column(name)
        where = f"feature view '{self.view.name}': column '{name}'"
        if not pa.types.is_timestamp(column.type):
            raise FeatsyncError(f"{where} is declared a timestamp, but the warehouse returned {column.type}")
        micros = epoch_micros(column)
        bad = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False) & ((micros < MIN_MICROS) | (micros > MAX_MICROS)))
        if len(bad):
            row = int(bad[0])
            raise FeatsyncError(
                f"{where} holds {_shown(column, row)} in the row {self.describe_row(batch, row)}; "
                "featsync handles instants in the years 1 to 9999 only"
            )
        return micros

    def _feature_column(self, batch: pa.RecordBatch | pa.Table, name: str, kind: str) -> pa.Array:
        """A fixed-width or text feature cast to the codec's Arrow type (exact casts only)."""
        column = batch.column(name)
        try:
            return pc.cast(column, getattr(pa, _ARROW_TYPES[kind])())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FeatsyncError(
                f"feature view '{self.view.name}': feature '{name}' is declared {kind} but the warehouse "
                f"returned {column.type} that does not convert exactly: {exc}"
            ) from None

    @cached_property
    def compact_length(self) -> int:
        """The length of a value in the compact form; -1 when the view has none (text features)."""
        if any(kind == "text" for _, kind in self.features):
            return -1
        return 4 + sum(struct.calcsize("<" + _STRUCT_CODES[kind]) for _, kind in self.features)  # FIXED_KINDS' widths

    @cached_property
    def value_shape(self) -> str:
        """What the write script checks a stored value against before comparing event times
        (featsync.online.push.WRITE_NEWER's last argument), as five numbers: the compact length
        (-1: none), the full form's fixed part (event time, null bitmap, fixed-width features),
        how many texts follow it, the position (from 1) of the null bitmap's last byte (0: no
        features) and the bound that byte stays below (its unused high bits are 0)."""
        n = len(self.features)
        r = self._reader
        bitmap = r.fixed_at if n else 0  # bytes 1-8: the event time; then the bitmap
        return f"{self.compact_length} {r.texts_at} {r.texts} {bitmap} {1 << n % 8 if n % 8 else 256}"

    def encode_values(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        """Every row's value, column-wise (Arrow kernels and numpy, no per-row Python)."""
        n = batch.num_rows
        features = self.features
        micros = self.micros(batch, self.view.timestamp)
        nulls = np.zeros((n, len(features)), dtype=bool)
        fixed: dict[str, np.ndarray] = {}  # f<i>: the fixed-width features' values
        texts = []
        for i, (name, kind) in enumerate(features):
            nulls[:, i] = batch.column(name).is_null().to_numpy(zero_copy_only=False)
            if kind == TIMESTAMP:
                fixed[f"f{i}"] = self.micros(batch, name)  # NULL as 0, as NULL_FILL says
                continue
            column = pc.fill_null(self._feature_column(batch, name, kind), NULL_FILL[kind])
            if kind == TEXT:
                length = pc.binary_length(column).to_numpy(zero_copy_only=False).astype(_TEXT_LENGTH_DTYPE)
                texts += [pc.cast(_fixed_binary(length.tobytes(), 4, n), pa.binary()), pc.cast(column, pa.binary())]
            else:
                fixed[f"f{i}"] = column.to_numpy(zero_copy_only=False)
        compact, short, full = self._records(micros, nulls, fixed)
        if short is not None:
            short = pc.cast(_fixed_binary(short, self._compact_dtype.itemsize, n), pa.binary())
            if full is None:
                return short
        full = pc.cast(_fixed_binary(full, self._fixed_dtype.itemsize, n), pa.binary())
        if texts:
            return pc.binary_join_element_wise(full, *texts, b"")
        return full if short is None else pc.if_else(pa.array(compact), short, full)

    def encode_rows(self, micros: Sequence[int], features: Sequence[Sequence[object]]) -> list[bytes]:
        """The values of a few rows, row by row: what encode_values gives for the same rows, for
        a small pushed request (featsync.online.row_push), where encode_values' fixed cost of
        about 30 Arrow kernel calls is most of the time. `micros`: each row's event time (epoch
        microseconds, checked in range); `features`: each feature's typed values in declared
        order (None for NULL; timestamps as epoch microseconds). The fixed-width part is the
        same numpy records (_records) as encode_values'; text as decode_row reads it."""
        n = len(micros)
        nulls = np.array([[value is None for value in column] for column in features], dtype=bool).reshape(-1, n).T
        fixed: dict[str, np.ndarray] = {}
        texts: list[list[bytes]] = []
        for i, ((_, kind), column) in enumerate(zip(self.features, features, strict=True)):
            filled = [NULL_FILL[kind] if value is None else value for value in column]
            if kind == TEXT:
                texts.append([_TEXT_LENGTH.pack(len(b)) + b for b in (text.encode() for text in filled)])
            else:
                fixed[f"f{i}"] = np.array(filled, dtype=FIXED_KINDS[kind])
        compact, short, full = self._records(np.array(micros, dtype=np.int64), nulls, fixed)
        out = []
        for row, is_compact in enumerate(compact.tolist()):
            if is_compact:
                width = self._compact_dtype.itemsize
                out.append(short[row * width : (row + 1) * width])
            else:
                width = self._fixed_dtype.itemsize
                out.append(b"".join([full[row * width : (row + 1) * width], *(column[row] for column in texts)]))
        return out

    def _records(
        self, micros: np.ndarray, nulls: np.ndarray, fixed: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, bytes | None, bytes | None]:
        """The fixed-width part of each row's value, as numpy records (the layout's one
        definition, for encode_values and encode_rows): (which rows take the compact form,
        the compact records' bytes or None, the full records' bytes or None when every row is
        compact). The compact form is for rows of a view without text features, without a
        NULL feature, at a whole second from 1970 to 2106."""
        n = len(micros)
        compact = np.zeros(n, dtype=bool)
        if self.fixed_width:
            compact = ~nulls.any(axis=1) & (micros % 1_000_000 == 0) & (micros >= 0) & (micros < 2**32 * 1_000_000)
        short = full = None
        if compact.any():
            rows = np.zeros(n, dtype=self._compact_dtype)
            rows["ts"] = micros // 1_000_000
            for name, values in fixed.items():
                rows[name] = values
            short = rows.tobytes()
        if not compact.all():
            rows = np.zeros(n, dtype=self._fixed_dtype)
            rows["ts"] = micros.astype(np.float64)
            if self.features:
                rows["nulls"] = np.packbits(nulls, axis=1, bitorder="little")
            for name, values in fixed.items():
                rows[name] = values
            full = rows.tobytes()
        return compact, short, full

    @cached_property
    def _feature_fields(self) -> list[tuple[str, str]]:
        return [(f"f{i}", FIXED_KINDS[kind]) for i, (_, kind) in enumerate(self.features) if kind != "text"]

    @cached_property
    def _fixed_dtype(self) -> np.dtype:
        """The fixed-width head of a full value as a numpy record: event time, null bitmap, fixed features."""
        return np.dtype([("ts", ">f8"), ("nulls", "u1", ((len(self.features) + 7) // 8,)), *self._feature_fields])

    @cached_property
    def _compact_dtype(self) -> np.dtype:
        """A compact value as a numpy record: whole-second event time, then the features (no NULLs)."""
        return np.dtype([("ts", ">u4"), *self._feature_fields])

    @cached_property
    def fixed_width(self) -> bool:
        """Every value has the same length (no text feature): many can be decoded as one numpy array."""
        return all(kind != "text" for _, kind in self.features)

    def decode_columns(self, values: Sequence[bytes]) -> tuple[list[int], list[list[object]]]:
        """Many stored values of a fixed-width view at once: event times (microseconds), then one
        list per feature in declared order. What decode_row gives row by row, without per-row Python.

        Full and compact values differ in length; a batch of one form is decoded as one numpy
        array, a mixed batch form by form and put back in order. A value of any other length
        is refused (StoredValueError), never decoded."""
        full = self._fixed_dtype.itemsize
        compact = [len(value) == self.compact_length for value in values]
        for value, is_compact in zip(values, compact, strict=True):
            if not is_compact and len(value) != full:
                raise self._foreign(value)
        if all(compact):
            return self._decode_block(values, True)
        if not any(compact):
            return self._decode_block(values, False)
        micros: list[int] = [0] * len(values)
        columns: list[list[object]] = [[None] * len(values) for _ in self.features]
        for form in (True, False):
            at = [i for i, is_compact in enumerate(compact) if is_compact is form]
            block_micros, block_columns = self._decode_block([values[i] for i in at], form)
            for j, i in enumerate(at):
                micros[i] = block_micros[j]
            for column, block in zip(columns, block_columns, strict=True):
                for j, i in enumerate(at):
                    column[i] = block[j]
        return micros, columns

    def _decode_block(self, values: Sequence[bytes], compact: bool) -> tuple[list[int], list[list[object]]]:
        rows = np.frombuffer(b"".join(values), dtype=self._compact_dtype if compact else self._fixed_dtype)
        if compact:
            nulls = np.zeros((len(values), len(self.features)), dtype=bool)
            micros = (rows["ts"].astype(np.int64) * 1_000_000).tolist()
        else:
            nulls = np.unpackbits(rows["nulls"], axis=1, count=len(self.features), bitorder="little").astype(bool)
            times = rows["ts"]
            bad = np.flatnonzero(~((times >= _STORED_MIN) & (times <= _STORED_MAX)))  # NaN compares false
            if len(bad):
                raise self._bad_time(float(times[bad[0]]), "its event time")
            micros = np.minimum(times.astype(np.int64), MAX_MICROS).tolist()  # see _EVENT_TIME
        columns: list[list[object]] = []
        for i, ((_, kind), has_null) in enumerate(zip(self.features, nulls.any(axis=0).tolist(), strict=True)):
            column = rows[f"f{i}"]
            out: list[object] = (column.astype(bool) if kind == "bool" else column).tolist()
            if kind == "timestamp":
                try:
                    out = [from_micros(m) for m in out]
                except FeatsyncError:
                    bad = next(m for m in out if not MIN_MICROS <= m <= MAX_MICROS)  # type: ignore[operator]
                    raise self._bad_time(bad, f"its feature '{self.features[i][0]}'") from None
            if has_null:
                out = [None if is_null else value for value, is_null in zip(out, nulls[:, i].tolist(), strict=True)]
            columns.append(out)
        return micros, columns

    @cached_property
    def _reader(self) -> _RowReader:
        return _RowReader.of(self.features)

    def decode_row(self, value: bytes) -> tuple[int, list[object]]:
        """One stored value as (event time in microseconds, feature values in declared order).

        The read path's hot loop: one precompiled struct unpack for every fixed-width feature.
        """
        r = self._reader
        size = len(value)
        if size == self.compact_length:  # compact: whole-second event time, no NULLs, no text
            values = list(r.fixed.unpack_from(value, 4))
            if r.timestamps:
                self._feature_times(values)
            return _EVENT_SECONDS.unpack_from(value)[0] * 1_000_000, values
        if size < r.texts_at or (not r.texts and size != r.texts_at):
            raise self._foreign(value)
        values = list(r.fixed.unpack_from(value, r.fixed_at))
        if r.texts:
            offset = r.texts_at
            try:
                for _ in range(r.texts):
                    (length,) = _TEXT_LENGTH.unpack_from(value, offset)
                    end = offset + 4 + length
                    if end > size:
                        raise ValueError("text runs past the value")
                    values.append(value[offset + 4 : end].decode())
                    offset = end
            except (struct.error, ValueError):  # UnicodeDecodeError is a ValueError
                raise self._foreign(value) from None
            if offset != size:
                raise self._foreign(value)
            if r.order is not None:
                values = [values[i] for i in r.order]
        if r.timestamps:
            self._feature_times(values)
        nulls = int.from_bytes(value[8 : r.fixed_at], "little")
        if nulls:
            for i in range(len(values)):
                if nulls >> i & 1:
                    values[i] = None
        (event,) = _EVENT_TIME.unpack_from(value)
        if not _STORED_MIN <= event <= _STORED_MAX:  # NaN compares false
            raise self._bad_time(event, "its event time")
        return _read_event_time(event), values

    def _feature_times(self, values: list[object]) -> None:
        """The timestamp features of one decoded row, microseconds to datetimes, in place."""
        i = 0
        try:
            for i in self._reader.timestamps:
                values[i] = from_micros(values[i])  # type: ignore[arg-type]
        except FeatsyncError:
            raise self._bad_time(values[i], f"its feature '{self.features[i][0]}'") from None

    def _bad_time(self, micros: object, what: str) -> StoredValueError:
        """The error for a stored value of the right length holding a time featsync never writes
        (NaN, +-inf, outside the years 1 to 9999): refused like a value of the wrong length."""
        return StoredValueError(
            f"a value stored for feature view '{self.view.name}' v{self.view.version} under {self.prefix}* does not "
            f"fit its layout ({self.schema}): {what} is {shown(micros)} microseconds since 1970, outside the years "
            "1 to 9999. featsync did not write it; it was not decoded"
        )

    def _foreign(self, value: bytes) -> StoredValueError:
        """The error for a stored value that cannot be in this layout (wrong length, broken text)."""
        if self.fixed_width:
            expected = f"{self._fixed_dtype.itemsize} or {self.compact_length} bytes"
        else:
            r = self._reader
            expected = f"at least {r.texts_at + 4 * r.texts} bytes, ending with its {r.texts} text(s)"
        return StoredValueError(
            f"a value stored for feature view '{self.view.name}' v{self.view.version} under {self.prefix}* does not "
            f"fit its layout ({self.schema}): {len(value)} bytes, expected {expected}. featsync did not write it "
            "for this layout; it was not decoded"
        )

    def decode(self, value: bytes) -> tuple[datetime, dict[str, object]]:
        """One stored value back into (event time, {feature: value}) with Python types."""
        micros, values = self.decode_row(value)
        return from_micros(micros), dict(zip((name for name, _ in self.features), values, strict=True))


@dataclass(frozen=True)
class _RowReader:
    """The compiled read side of a value layout (see the module docstring)."""

    fixed: struct.Struct  # every fixed-width feature, declared order, after the null bitmap
    fixed_at: int
    texts: int  # how many text features follow the fixed part
    texts_at: int
    order: tuple[int, ...] | None  # (fixed..., texts...) -> declared order; None when already in order
    timestamps: tuple[int, ...]  # declared positions of timestamp features

    @classmethod
    def of(cls, features: tuple[tuple[str, str], ...]) -> _RowReader:
        fixed = [i for i, (_, kind) in enumerate(features) if kind != "text"]
        texts = [i for i, (_, kind) in enumerate(features) if kind == "text"]
        layout = struct.Struct("<" + "".join(_STRUCT_CODES[features[i][1]] for i in fixed))
        at = 8 + (len(features) + 7) // 8
        stored = fixed + texts
        order = None if stored == sorted(stored) else tuple(stored.index(i) for i in range(len(features)))
        timestamps = tuple(i for i, (_, kind) in enumerate(features) if kind == "timestamp")
        return cls(layout, at, len(texts), at + layout.size, order, timestamps)


def epoch_micros(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """UTC microseconds since the epoch of a timestamp column of any unit and zone (NULL as 0).

    Arrow keeps a zoned timestamp as its UTC instant and a naive one as its wall clock,
    which featsync reads as UTC: both are the stored integers. Nanoseconds are rounded
    down (numpy's floor division, also before 1970; see the module docstring); seconds and
    milliseconds far outside the years 1 to 9999 are clipped just beyond them first, so
    they stay out of range instead of overflowing.
    """
    if not pa.types.is_timestamp(column.type):
        raise FeatsyncError(f"expected a timestamp column, got {column.type}")
    raw = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    factor = _UNIT_MICROS[column.type.unit]
    if factor is None:
        return raw // 1000
    if factor == 1:
        return raw
    return np.clip(raw, MIN_MICROS // factor - 1, MAX_MICROS // factor + 1) * factor


def stored_micros(micros: int) -> int:
    """An event time (epoch microseconds) as a read gets it back once push stored it: through the
    full form's float64 (see _EVENT_TIME; the compact form's whole seconds come back the same).
    For whoever compares a warehouse time with an online one (featsync verify)."""
    return _read_event_time(_EVENT_TIME.unpack(_EVENT_TIME.pack(micros))[0])


def _read_event_time(stored: float) -> int:
    """A full value's stored event time back as microseconds (see _EVENT_TIME)."""
    return min(int(stored), MAX_MICROS)


def from_micros(micros: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=micros)  # exact (integer arithmetic), and faster than fromtimestamp
    except OverflowError:
        raise FeatsyncError(
            f"a time of {micros} microseconds since 1970 is outside the years 1 to 9999, which featsync handles "
            "(featsync push refuses such times)"
        ) from None


def utf8(text: str) -> bool:
    """Whether a str encodes as UTF-8: one holding a lone surrogate ('a\\ud800', which Python
    allows and JSON parsers refuse) does not, and Arrow, Redis keys and values need UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(column: pa.Array | pa.ChunkedArray, row: int) -> str:
    """One value of a column as text, whatever its type (Arrow formats years beyond 9999 too)."""
    value = column.slice(row, 1)
    if pa.types.is_timestamp(value.type):
        return value.cast(pa.string())[0].as_py()
    return shown(value[0].as_py())


def _fixed_binary(buffer: bytes, width: int, n: int) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(buffer)])


def _interleave(parts: list[pa.Array], separator: str) -> list[pa.Array | str]:
    out: list[pa.Array | str] = []
    for i, part in enumerate(parts):
        if i:
            out.append(separator)
        out.append(part)
    return out


def _key_text(value: object) -> str:
    """A key value other than a plain str or int: a str subclass (a str Enum) by its text, any
    integer (numpy's) as the int; anything else refused (a float 1.0 would look up "1.0")."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise FeatsyncError(f"entity key value {shown(value)} is a {type(value).__name__}; entity keys are strings or integers")


def key_texts(columns: Sequence[Sequence[object]]) -> list[str]:
    """The entity part of each row's key (after the view's prefix), one column per entity column.

    Views on the same entities share it, so a read builds it once for all of them.
    """
    if len(columns) == 1:
        return [_key_part(v) for v in columns[0]]
    return ["|".join(_key_part(v) for v in values) for values in zip(*columns, strict=True)]


def _key_part(value: object) -> str:
    if type(value) is str:
        return _escape(value) if "\\" in value or "|" in value else value
    if type(value) is int:
        return str(value)
    return _escape(_key_text(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def online_values(column: pa.Array | pa.ChunkedArray) -> list[object]:
    """A warehouse column as Python values, the way an online read returns them: timestamps
    of any precision and zone as aware UTC datetimes at whole microseconds (rounded down, as
    stored), other values as Arrow gives them. (pyarrow itself would give pandas Timestamps
    for nanoseconds and fail on years beyond 9999.)"""
    if not pa.types.is_timestamp(column.type):
        return column.to_pylist()
    micros = epoch_micros(column).tolist()
    valid = column.is_valid().to_numpy(zero_copy_only=False).tolist()
    return [from_micros(m) if ok else None for m, ok in zip(micros, valid, strict=True)]
