"""A feature view's expectation suite applied to pushed rows, one row at a time.

`featsync validate` runs a suite with Great Expectations over a whole table. Pushed rows
arrive a few at a time, and a request must be accepted or refused in microseconds, so the
expectations that are about one row at a time are evaluated here with Arrow kernels, with
Great Expectations' semantics (a NULL is not unexpected except for not-null; `strict_min`
/ `strict_max` exclude the bound; suite parameters such as now_minus_2d are filled with the
push's clock). The suite itself is the one `featsync validate` loads
(featsync.quality.suites), so both read the same file the same way.

Expectations about a whole table (row counts, max/mean, uniqueness, and any with
`mostly` below 1) say nothing about a handful of rows: they are skipped, and `notes`
says which, so a caller can tell a check that passed from one that was not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featsync.errors import shown
from featsync.online.rows import PushRowsError
from featsync.quality.suites import Suite

ROW_LEVEL = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
}


@dataclass
class RowChecks:
    """The row-level part of one view's suite, ready to run on conformed rows."""

    view: str
    suite: Suite | None
    notes: list[str] = field(default_factory=list)  # the expectations skipped, and why

    def __post_init__(self) -> None:
        self._checks: list[tuple[int, dict[str, Any]]] = []
        if self.suite is None:
            return
        for index, entry in enumerate(self.suite.expectations, 1):
            kind = entry["type"]
            kwargs = entry.get("kwargs") or {}
            mostly = kwargs.get("mostly", 1)
            if kind not in ROW_LEVEL:
                self.notes.append(f"expectation #{index} ({kind}) is about the whole table: not applied to pushed rows")
            elif mostly is not None and mostly < 1:
                self.notes.append(
                    f"expectation #{index} ({kind}) has mostly={mostly}, a share of a table: not applied to pushed rows"
                )
            else:
                self._checks.append((index, entry))

    @property
    def active(self) -> bool:
        """Whether any expectation applies to pushed rows."""
        return bool(self._checks)

    def check(self, table: pa.Table, now: datetime | None = None) -> None:
        """PushRowsError naming the first row, column and expectation a row fails."""
        if not self._checks or table.num_rows == 0:
            return
        parameters = self.suite.parameter_values(now or datetime.now(UTC)) if self.suite and self.suite.parameters else {}
        for index, entry in self._checks:
            kind = entry["type"]
            kwargs = {k: _filled(v, parameters) for k, v in (entry.get("kwargs") or {}).items()}
            name = kwargs["column"]
            if name not in table.column_names:
                continue
            column = table.column(name).combine_chunks()
            bad = _unexpected(kind, kwargs, column)
            rows = np.flatnonzero(pc.fill_null(bad, False).to_numpy(zero_copy_only=False))
            if len(rows):
                row = int(rows[0])
                given = {k: v for k, v in (entry.get("kwargs") or {}).items() if k not in ("column", "mostly")}
                args = ", ".join(f"{k}={v!r}" for k, v in given.items())  # the suite's own arguments
                raise PushRowsError(
                    f"feature view '{self.view}': row {row}, column '{name}': {shown(column[row].as_py())} fails expectation "
                    f"#{index} {kind}({args}) of {self.suite.file}"
                )


def _filled(value: Any, parameters: dict[str, datetime]) -> Any:
    """A suite parameter ({"$PARAMETER": "now_minus_2d"}) as an aware UTC instant."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]].replace(tzinfo=UTC)
    return value


def _scalar(value: Any, column: pa.Array) -> pa.Scalar:
    if pa.types.is_timestamp(column.type):
        if isinstance(value, str):
            # Deliberately not featsync.times' rule: a suite's bound is an expectation's
            # argument, read as the warehouse check reads it (naive means UTC), not an instant
            # sent by a client, so that the pushed-row check and `featsync validate` agree.
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # the suite's naive instants mean UTC, as the warehouse's
        return pa.scalar(value, column.type)
    return pa.scalar(value)


def _unexpected(kind: str, kwargs: dict[str, Any], column: pa.Array) -> pa.Array:
    """A boolean per row: True where the row fails (NULL counts as passing except for not-null)."""
    if kind == "expect_column_values_to_not_be_null":
        return column.is_null()
    if kind == "expect_column_values_to_be_null":
        return column.is_valid()
    if kind == "expect_column_values_to_be_between":
        bad = pa.array(np.zeros(len(column), dtype=bool))
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is not None:
            below = pc.less_equal if kwargs.get("strict_min") else pc.less
            bad = pc.or_(bad, pc.fill_null(below(column, _scalar(low, column)), False))
        if high is not None:
            above = pc.greater_equal if kwargs.get("strict_max") else pc.greater
            bad = pc.or_(bad, pc.fill_null(above(column, _scalar(high, column)), False))
        return bad
    if kind in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = pa.array(list(kwargs.get("value_set") or []))
        if len(values) and values.type != column.type:
            try:
                values = values.cast(column.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        member = pc.fill_null(pc.is_in(column, value_set=values), False)
        inside = pc.and_(member, column.is_valid())
        return pc.and_(pc.invert(member), column.is_valid()) if kind.endswith("to_be_in_set") else inside
    if kind in ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"):
        pattern = kwargs["regex"]
        re.compile(pattern)  # Python's syntax, as GX's pandas engine; RE2 (Arrow) is a subset of it
        matched = pc.fill_null(pc.match_substring_regex(column.cast(pa.string()), pattern), False)
        if kind == "expect_column_values_to_match_regex":
            return pc.and_(pc.invert(matched), column.is_valid())
        return pc.and_(matched, column.is_valid())
    raise AssertionError(kind)  # pragma: no cover - only ROW_LEVEL kinds are kept
