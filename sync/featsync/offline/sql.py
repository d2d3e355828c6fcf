"""The only ways featsync puts a name or a value into SQL it builds in Python.

SQL that featsync builds itself (push's change filter, status, verify's sample, drift's
windows, validate's sample) may hold two kinds of outside input: identifiers from the
YAML (columns, entities) and values read from Redis, files, requests or the command line
(watermarks, windows, seeds). Neither is ever pasted in as text:

- `identifier` writes a name bare only when it passes the registry's name rule
  (featsync.registry.identifiers: the only names the YAML may declare), so it folds exactly
  as the macros' own unquoted SQL does on every engine; anything else is double-quoted with
  quotes doubled.
- a value is bound as a parameter (`Warehouse.bind`), or, where binding costs too much,
  rendered by `literal` from a *typed* value (a datetime, an int, a finite float, a bool):
  its text comes from Python's own formatting of that type, never from the input, and a
  str is refused outright.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from featsync.errors import FeatsyncError
from featsync.registry.identifiers import identifier_problem


def identifier(name: str) -> str:
    """A column name as SQL: bare when plain (as the macros write it), else quoted."""
    if not isinstance(name, str) or not name:
        raise FeatsyncError(f"{name!r} is not a column name")
    if identifier_problem(name) is None:
        return name
    return '"' + name.replace('"', '""') + '"'


def naive_utc(value: datetime) -> datetime:
    """An instant as the naive UTC datetime warehouses store (aware values converted)."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def literal(value: Any, engine: str) -> str:
    """A typed value as an SQL literal of `engine` (duckdb, postgres, snowflake, spark).

    Timestamps are naive UTC (an aware one is converted first), as every warehouse
    column featsync compares with. Only types whose text cannot carry SQL are accepted.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FeatsyncError(f"{value} cannot be written as an SQL number")
        return repr(float(value))
    if isinstance(value, datetime):
        text = naive_utc(value).isoformat(sep=" ", timespec="microseconds")
        return f"cast('{text}' as {'timestamp_ntz' if engine in ('snowflake', 'spark') else 'timestamp'})"
    if isinstance(value, date):
        return f"cast('{value.isoformat()}' as date)"
    raise TypeError(f"featsync does not write a {type(value).__name__} into SQL as a literal; bind it")


def slice_number(columns: list[str], slices: int, engine: str) -> str:
    """Which of `slices` disjoint slices a row falls in (0 to slices - 1), from a hash of its
    entity key columns, as SQL of `engine`: `featsync push --jobs N` reads each slice of a
    view's latest rows in its own query. Every row gets exactly one number (never NULL), the
    same in every query of the same engine; the hash differs between engines, which is fine
    (a push reads one engine)."""
    if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
        raise FeatsyncError(f"{slices!r} slices: expected a whole number of at least 1")
    names = ", ".join(identifier(c) for c in columns)
    n = str(slices)
    if engine == "duckdb":
        expression = f"hash({names}) % {n}"  # unsigned 64-bit
    elif engine == "postgres":
        text = ", ".join(f"{identifier(c)}::text" for c in columns)
        expression = f"((hashtextextended(concat_ws('|', {text}), 0) % {n}) + {n}) % {n}"
    elif engine == "snowflake":
        expression = f"mod(mod(hash({names}), {n}) + {n}, {n})"
    elif engine == "spark":
        expression = f"pmod(hash({names}), {n})"
    else:
        raise FeatsyncError(f"featsync cannot slice a push on a {engine} target")
    return f"coalesce({expression}, 0)"
