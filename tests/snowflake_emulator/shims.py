"""Shims over fakesnow 0.12.1's gaps; see the package docstring for why each exists."""

from __future__ import annotations

import fakesnow.arrow
import fakesnow.cursor
import pyarrow as pa
from sqlglot import exp


def asof_match_condition(node: exp.Expr) -> exp.Expr:
    """Snowflake `ASOF JOIN r MATCH_CONDITION (c) ON k` -> DuckDB `ASOF LEFT JOIN r ON k AND c`."""
    if isinstance(node, exp.Join) and node.args.get("match_condition") is not None:
        condition = node.args["match_condition"]
        node.set("match_condition", None)
        on = node.args.get("on")
        node.set("on", exp.and_(on, condition) if on is not None else condition)
        node.set("side", "LEFT")
    return node


def temporary_as_permanent(node: exp.Expr) -> exp.Expr:
    """`create temporary table|view db.schema.x` -> a permanent one (DuckDB keeps temporaries in its own catalog)."""
    if isinstance(node, exp.Create) and (props := node.args.get("properties")) is not None:
        for prop in list(props.expressions):
            if isinstance(prop, exp.TemporaryProperty):
                prop.pop()
    return node


def merge_insert_from_source(node: exp.Expr) -> exp.Expr:
    """Qualify the bare columns of MERGE's `when not matched then insert values (...)` with the source.

    In Snowflake they can only mean the source row (there is no target row); fakesnow runs the
    MERGE as a join of target and source, where a bare name is ambiguous."""
    if isinstance(node, exp.Merge):
        using = node.args["using"]
        source = using.alias_or_name
        for when in node.args["whens"].expressions:
            then = when.args.get("then")
            if isinstance(then, exp.Insert) and isinstance(then.expression, exp.Tuple):
                for column in then.expression.find_all(exp.Column):
                    if not column.table:
                        column.set("table", exp.to_identifier(source))
    return node


def no_comment_for_temporary(node: exp.Expr) -> exp.Expr:
    """Drop fakesnow's comment bookkeeping for its own temporary tables (MERGE's `merge_candidates`).

    fakesnow records every created table's comment in its `_fs_global` database; inside dbt's
    explicit `begin ... commit` around a snapshot MERGE the target database was already written,
    and DuckDB allows one written database per transaction, so the MERGE failed and the aborted
    transaction then hung the client's retries."""
    props = node.args.get("properties") if isinstance(node, exp.Create) else None
    if props is not None and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions):
        node.set("table_comment", None)
    return node


def copy_from_quoted_stage(node: exp.Expr) -> exp.Expr:
    """`copy into t from (select $1:"c" from '@stage')` -> `... from @stage` (the stage unquoted).

    The connector's write_pandas quotes the stage name inside its COPY transformation, which
    Snowflake accepts; fakesnow only recognises an unquoted stage there ("invalid URL prefix")."""
    if isinstance(node, exp.Copy):
        for source in node.args.get("files") or []:
            for table in source.find_all(exp.Table):
                if isinstance(table.this, exp.Literal) and table.this.name.startswith("@"):
                    table.set("this", exp.Var(this=table.this.name))
    return node


SHIMS = (asof_match_condition, temporary_as_permanent, merge_insert_from_source, copy_from_quoted_stage)


def null_timestamps(original):
    """Wrap fakesnow.arrow.timestamp_to_sf_struct: the struct gets the timestamps' null mask."""

    def timestamp_to_sf_struct(ts):
        struct = original(ts)
        if isinstance(ts, pa.ChunkedArray):
            ts = ts.combine_chunks()
        if ts.null_count == 0:
            return struct
        return pa.StructArray.from_arrays(
            [struct.field(i) for i in range(struct.type.num_fields)],
            fields=list(struct.type),
            mask=ts.is_null(),
        )

    return timestamp_to_sf_struct


def install() -> None:
    """Apply the shims inside fakesnow's translation step (idempotent)."""
    cursor = fakesnow.cursor.FakeSnowflakeCursor
    if getattr(cursor, "_featsync_shimmed", False):
        return
    original = cursor._transform_explode

    def _transform_explode(self, expression):
        # The incoming statement, parsed as Snowflake SQL, before fakesnow rewrites it for DuckDB.
        for shim in SHIMS:
            expression = expression.transform(shim, copy=False)
        return original(self, expression)

    cursor._transform_explode = _transform_explode

    original_transform = cursor._transform

    def _transform(self, expression, params):
        transformed = original_transform(self, expression, params)
        return no_comment_for_temporary(transformed)

    cursor._transform = _transform
    cursor._featsync_shimmed = True
    fakesnow.arrow.timestamp_to_sf_struct = null_timestamps(fakesnow.arrow.timestamp_to_sf_struct)
