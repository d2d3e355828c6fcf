"""featsync's own connection to the warehouse, made from the dbt profile's credentials.

dbt compiles SQL; featsync runs it where it needs Arrow out of the warehouse (training
sets now, online pushes later): DuckDB natively, PostgreSQL through the ADBC driver, both
as record batches so memory stays bounded. Connections are short-lived: DuckDB allows
one configuration per database file in a process, and dbt runs in-process too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from featsync.errors import FeatsyncError
from featsync.project import Project

BATCH_ROWS = 65_536


def relation_name(schema: str, name: str) -> str:
    """The quoted relation of table `name` in `schema` (DuckDB and PostgreSQL quoting)."""
    return f'"{schema}"."{name}"'


class Warehouse:
    """The operations featsync needs; one subclass per engine."""

    adapter_type: str
    schema: str

    def arrow_batches(self, sql: str, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def fetch_arrow(self, sql: str) -> pa.Table:
        batches = list(self.arrow_batches(sql))
        if not batches:
            raise FeatsyncError("the warehouse returned no result schema")
        return pa.Table.from_batches(batches)

    def execute(self, sql: str) -> None:
        raise NotImplementedError

    def relation(self, name: str) -> str:
        return relation_name(self.schema, name)

    def create_table(self, name: str, table: pa.Table) -> None:
        """Load an Arrow table into a new table `name` in the target schema."""
        raise NotImplementedError

    def drop_table(self, relation: str) -> None:
        self.execute(f"drop table if exists {relation}")

    def close(self) -> None:
        raise NotImplementedError


class DuckDBWarehouse(Warehouse):
    adapter_type = "duckdb"

    def __init__(self, credentials: Any):
        import duckdb

        self.schema = credentials.schema or "main"
        try:
            self.con = duckdb.connect(credentials.path)
            # Settings go through SET, as dbt-duckdb applies them: some (TimeZone) need
            # their built-in extension loaded first, which connect(config=...) does not do.
            for key, value in (credentials.settings or {}).items():
                self.con.execute(f"set {key} = ?", [str(value)])
        except duckdb.Error as exc:
            raise FeatsyncError(f"cannot open DuckDB database {credentials.path}: {exc}") from exc

    def arrow_batches(self, sql: str, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        reader = self.con.sql(sql).to_arrow_reader(batch_rows)
        yield from reader

    def execute(self, sql: str) -> None:
        self.con.execute(sql)

    def create_table(self, name: str, table: pa.Table) -> None:
        self.con.register(f"{name}_arrow", table)
        try:
            self.con.execute(f"create table {self.relation(name)} as select * from {name}_arrow")
        finally:
            self.con.unregister(f"{name}_arrow")

    def close(self) -> None:
        self.con.close()


class PostgresWarehouse(Warehouse):
    adapter_type = "postgres"

    def __init__(self, credentials: Any):
        import adbc_driver_postgresql.dbapi as adbc

        self.schema = credentials.schema
        user = credentials.user
        password = f":{credentials.password}" if credentials.password else ""
        uri = f"postgresql://{user}{password}@{credentials.host}:{credentials.port}/{credentials.database}"
        try:
            self.con = adbc.connect(uri, autocommit=True)
        except Exception as exc:  # the driver raises its own error types
            raise FeatsyncError(f"cannot connect to PostgreSQL at {credentials.host}:{credentials.port}: {exc}") from exc

    def arrow_batches(self, sql: str, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        cursor = self.con.cursor()
        try:
            cursor.execute(sql)
            yield from cursor.fetch_record_batch()
        finally:
            cursor.close()

    def execute(self, sql: str) -> None:
        cursor = self.con.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    def create_table(self, name: str, table: pa.Table) -> None:
        cursor = self.con.cursor()
        try:
            cursor.adbc_ingest(name, table, mode="create", db_schema_name=self.schema)
        finally:
            cursor.close()

    def close(self) -> None:
        self.con.close()


ENGINES = {"duckdb": DuckDBWarehouse, "postgres": PostgresWarehouse}


def profile_credentials(project: Project) -> Any:
    """The target's credentials, rendered by dbt's own profile loader (env_var and all)."""
    from argparse import Namespace

    from dbt.config.runtime import load_profile
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(os.environ)
    set_from_args(Namespace(PROFILES_DIR=str(project.profiles_dir)), None)
    try:
        profile = load_profile(str(project.project_dir), {}, None, project.target)
    except Exception as exc:  # dbt's profile errors are several types
        raise FeatsyncError(f"cannot load the dbt profile from {project.profiles_dir}: {exc}") from exc
    return profile.credentials


@contextmanager
def connect(project: Project, credentials: Any = None) -> Iterator[Warehouse]:
    """Open the project's warehouse for the target (credentials already loaded, or loaded here); closed on exit."""
    credentials = credentials or profile_credentials(project)
    engine = ENGINES.get(credentials.type)
    if engine is None:
        raise FeatsyncError(
            f"featsync cannot read from a {credentials.type} target yet (supported: {', '.join(sorted(ENGINES))})"
        )
    warehouse = engine(credentials)
    try:
        yield warehouse
    finally:
        warehouse.close()
