"""The offline push log: rows pushed with `to` including offline, kept where the view's SQL reads
them, so the next `dbt build` and every training set see exactly the values that were served
(no training/serving skew).

Per engine (the dbt side is the package macro featsync.push_log, which a view's model unions
with its batch source; see docs/push-api.md):

- DuckDB: a directory of parquet files, `$FEATSYNC_PUSH_LOG_DIR/<view>/` (default
  `data/pushed`, relative to the working directory like the DuckDB file itself). Each push
  writes one new file (a temporary name, fsync, then an atomic rename and an fsync of the
  directory), so a reader never sees half a file and a returned push survives a crash. The
  DuckDB database file takes one writer at a time; files keep the server and the stream
  consumer from ever locking it while dbt builds.
- PostgreSQL: an append-only table `featsync_push_log__<view>` in the target's schema, created
  on the first push (ADBC bulk ingest, committed before the push returns).
- Snowflake: the same append-only table, created on the first push with the rows' column
  types, filled by one INSERT whose values are bound server-side (the connector's qmark
  style: one array binding per push, never SQL text), autocommitted before the push returns.

Each log row is the view's declared columns (timestamps as naive UTC, the warehouse
convention) plus `featsync_pushed_at`, when featsync received it.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featsync.errors import FeatsyncError
from featsync.project import Project
from featsync.registry import FeatureView

LOG_DIR_ENV = "FEATSYNC_PUSH_LOG_DIR"
DEFAULT_LOG_DIR = "data/pushed"
TABLE_PREFIX = "featsync_push_log__"
PUSHED_AT = "featsync_pushed_at"


def log_dir() -> Path:
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR)


def log_table(view: FeatureView) -> str:
    return f"{TABLE_PREFIX}{view.name}"


def log_rows(table: pa.Table, now: datetime | None = None) -> pa.Table:
    """The rows as logged: timestamps as naive UTC, and when they were pushed."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit))  # the UTC wall clock
        columns[name] = column
    pushed_at = (now or datetime.now(UTC)).replace(tzinfo=None)
    columns[PUSHED_AT] = pa.array([pushed_at] * table.num_rows, pa.timestamp("us"))
    return pa.table(columns)


def append(project: Project, view: FeatureView, table: pa.Table, credentials: Any = None) -> str:
    """Append checked rows (featsync.online.rows.conform) to the view's log, durably; returns
    where they went (a file or a table). `credentials`: the target's, when the caller keeps them."""
    from featsync.offline.warehouse import profile_credentials

    credentials = credentials or profile_credentials(project)
    rows = log_rows(table)
    if credentials.type == "duckdb":
        return _append_parquet(view, rows)
    if credentials.type == "postgres":
        return _append_postgres(project, credentials, view, rows)
    if credentials.type == "snowflake":
        return _append_snowflake(credentials, view, rows)
    raise FeatsyncError(
        f"featsync keeps an offline push log on DuckDB, PostgreSQL and Snowflake only, not on {credentials.type} "
        "(docs/push-api.md); push to='online' there"
    )


def _append_parquet(view: FeatureView, rows: pa.Table) -> str:
    import pyarrow.parquet as pq

    folder = log_dir() / view.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = folder / f"{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = folder / f".{final.name}.tmp"  # not matched by the macro's *.parquet
        with temporary.open("wb") as fh:
            pq.write_table(rows, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, final)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise FeatsyncError(f"cannot write the offline push log of '{view.name}' in {folder}: {exc}") from exc
    return str(final)


def _append_postgres(project: Project, credentials: object, view: FeatureView, rows: pa.Table) -> str:
    from featsync.offline.warehouse import PostgresWarehouse, warehouse_errors

    warehouse = PostgresWarehouse(credentials)
    try:
        with warehouse_errors(f"the offline push log of '{view.name}'"):
            cursor = warehouse.con.cursor()
            try:  # autocommit: committed when ingest returns
                cursor.adbc_ingest(log_table(view), rows, mode="create_append", db_schema_name=warehouse.schema)
            finally:
                cursor.close()
    finally:
        warehouse.close()
    return f"{warehouse.schema}.{log_table(view)}"


def _append_snowflake(credentials: object, view: FeatureView, rows: pa.Table) -> str:
    from featsync.offline.warehouse import SnowflakeWarehouse, snowflake_type, warehouse_errors

    # Column names are the registry's (checked identifiers) and PUSHED_AT: written unquoted,
    # upper-cased by Snowflake like dbt's own tables. Values are bound, never SQL text.
    warehouse = SnowflakeWarehouse(credentials, paramstyle="qmark")
    relation = warehouse.relation(log_table(view))
    columns = ", ".join(f"{field.name} {snowflake_type(field)}" for field in rows.schema)
    names = ", ".join(rows.column_names)
    marks = ", ".join("?" * rows.num_columns)
    values = list(zip(*(rows.column(i).to_pylist() for i in range(rows.num_columns)), strict=True))
    try:
        with warehouse_errors(f"the offline push log of '{view.name}'"):
            cursor = warehouse.con.cursor()
            try:  # autocommit: committed when each statement returns
                cursor.execute(f"create table if not exists {relation} ({columns})")
                cursor.executemany(f"insert into {relation} ({names}) values ({marks})", values)
            finally:
                cursor.close()
    finally:
        warehouse.close()
    return relation
