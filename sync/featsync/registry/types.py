"""One table of column types: a declared `data_type`, read in the target's SQL dialect, as featsync's kind.

Every part of featsync that cares about a column's type asks this table: the registry
(entity keys must agree, time columns must be timestamps, online features must be
storable), the online codec (how a value is laid out in Redis), the on-demand evaluator
(what an expression may do with an input) and drift (numeric or categorical). The
declared text is parsed by sqlglot's `DataType.build` in the dbt adapter's dialect, so
aliases are understood the way the engine understands them: `varchar`, `text`,
`character varying(20)` and Snowflake's `string` are all text; `int4`, `bigint` and
Snowflake's `NUMBER(38, 0)` (or bare `NUMBER`) are integers; `interval` is not.

Kinds:

    int        integers, and decimals with scale 0 (NUMBER(p, 0)); stored as int64
    float      float, double, real; stored as float64
    bool       boolean
    text       varchar, text, char, string
    timestamp  naive (means UTC) or zoned (`zoned=True`: timestamptz, TIMESTAMP_TZ/LTZ,
               compared as the instant it is); any precision (s, ms, us, ns)
    decimal    decimals with a scale: exact in the warehouse, refused online (see below)
    date       a calendar date
    other      anything else (json, arrays, intervals, uuid, ...): usable offline only

Decimals online: featsync refuses a decimal feature in an online view rather than store
it as a double, which would silently lose exactness (0.1 + 0.2). Storing them exactly
would hand a Decimal to every reader (the Python API, Feast's JSON protocol, which has no
decimal type, and the on-demand evaluator, whose arithmetic is IEEE double), for features
that ML models consume as doubles anyway. The refusal names the column and the cast to
write in the model, which makes the rounding a visible decision of the model's author.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

INT, FLOAT, BOOL, TEXT, TIMESTAMP, DECIMAL, DATE, OTHER = "int", "float", "bool", "text", "timestamp", "decimal", "date", "other"
ONLINE_KINDS = (INT, FLOAT, BOOL, TEXT, TIMESTAMP)  # what the online codec stores
KEY_KINDS = (INT, TEXT)  # what an entity key may be: its text is the Redis key

T = exp.DataType.Type
_KINDS: dict[exp.DataType.Type, str] = {
    **dict.fromkeys(
        (
            T.TINYINT,
            T.UTINYINT,
            T.SMALLINT,
            T.USMALLINT,
            T.MEDIUMINT,
            T.UMEDIUMINT,
            T.INT,
            T.UINT,
            T.BIGINT,
            T.UBIGINT,
            T.INT128,
            T.UINT128,
            T.INT256,
            T.UINT256,
            T.SERIAL,
            T.SMALLSERIAL,
            T.BIGSERIAL,
        ),
        INT,
    ),  # fmt: skip
    **dict.fromkeys((T.FLOAT, T.DOUBLE), FLOAT),
    T.BOOLEAN: BOOL,
    **dict.fromkeys((T.TEXT, T.VARCHAR, T.NVARCHAR, T.CHAR, T.NCHAR, T.BPCHAR, T.NAME), TEXT),
    **dict.fromkeys(
        (T.TIMESTAMP, T.TIMESTAMPNTZ, T.DATETIME, T.DATETIME2, T.SMALLDATETIME, T.TIMESTAMP_S, T.TIMESTAMP_MS, T.TIMESTAMP_NS),
        TIMESTAMP,
    ),
    **dict.fromkeys((T.TIMESTAMPTZ, T.TIMESTAMPLTZ), TIMESTAMP),
    **dict.fromkeys((T.DATE, T.DATE32), DATE),
    **dict.fromkeys((T.DECIMAL, T.BIGDECIMAL, T.DECIMAL32, T.DECIMAL64, T.DECIMAL128, T.DECIMAL256), DECIMAL),
}
_ZONED = frozenset({T.TIMESTAMPTZ, T.TIMESTAMPLTZ})
# Spark's bare TIMESTAMP is whatever spark.sql.timestampType says; featsync's spark target sets
# TIMESTAMP_NTZ (as on every other engine, a bare `timestamp` is naive UTC), so a declared
# `timestamp` is naive there too. Zoned Spark columns are declared `timestamp_ltz`. sqlglot
# reads a bare TIMESTAMP in these dialects as zoned (Spark's default setting).
_BARE_TIMESTAMP = re.compile(r"timestamp\s*(\(\s*\d+\s*\))?", re.IGNORECASE)
_SPARK_DIALECTS = frozenset({"spark", "databricks"})
# dbt adapter type -> sqlglot dialect (the same names where sqlglot has one).
_DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "snowflake": "snowflake", "spark": "spark", "databricks": "databricks"}


class TypeProblem(ValueError):
    """A declared data_type featsync cannot read; the registry reports it with file, node and column."""


@dataclass(frozen=True)
class ColumnType:
    """A declared column type as featsync understands it."""

    declared: str
    kind: str
    zoned: bool = False  # timestamps only: with a time zone (an instant), else naive UTC
    precision: int | None = None  # decimals only; None when the declaration leaves it open
    scale: int | None = None

    @property
    def online_problem(self) -> str | None:
        """Why a feature of this type cannot be stored online; None when it can."""
        if self.kind in ONLINE_KINDS:
            return None
        if self.kind == DECIMAL:
            return (
                f"type '{self.declared}' is a decimal, which a double would hold only approximately online; "
                "cast it in the model, e.g. cast(x as double precision), or scale it to an integer "
                "(cast(x * 100 as bigint) keeps cents exact)"
            )
        if self.kind == DATE:
            return f"type '{self.declared}' is a date; cast it to a timestamp in the model to serve it online"
        return (
            f"type '{self.declared}' cannot be stored online (featsync stores integers, floats, booleans, "
            "text and timestamps); cast it in the model or set online: false"
        )


def dialect_of(adapter_type: str | None) -> str | None:
    """sqlglot's dialect for a dbt adapter type; None (sqlglot's generic SQL) when unknown."""
    return _DIALECTS.get((adapter_type or "").lower())


def column_type(data_type: str, dialect: str | None = None) -> ColumnType:
    """The featsync kind of a declared data_type in an engine's dialect; TypeProblem if unreadable."""
    declared = data_type.strip()
    if not declared:
        raise TypeProblem("no data_type")
    try:
        parsed = exp.DataType.build(declared, dialect=dialect)
    except (ParseError, TokenError, ValueError):
        raise TypeProblem(f"'{declared}' is not a SQL data type featsync can read") from None
    kind = _KINDS.get(parsed.this, OTHER)
    if kind == DECIMAL:
        params = [p.this for p in parsed.expressions if isinstance(p, exp.DataTypeParam)]
        precision = int(params[0].name) if params else None
        scale = int(params[1].name) if len(params) > 1 else (0 if params else None)
        if scale == 0:  # NUMBER(p, 0), Snowflake's INT: an integer
            return ColumnType(declared, INT)
        return ColumnType(declared, DECIMAL, precision=precision, scale=scale)
    if dialect in _SPARK_DIALECTS and _BARE_TIMESTAMP.fullmatch(declared):
        return ColumnType(declared, TIMESTAMP)
    return ColumnType(declared, kind, zoned=parsed.this in _ZONED)
