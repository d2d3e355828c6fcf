"""featsync's own connection to the warehouse, made from the dbt profile's credentials.

dbt compiles SQL; featsync runs it where it needs Arrow out of the warehouse (training
sets, online pushes): DuckDB natively, PostgreSQL through the ADBC driver, Snowflake
through snowflake-connector's Arrow result batches, Spark through pyspark's Arrow batches
one partition at a time; all as record batches so memory stays
bounded by the batch, not the result. Connections are short-lived: DuckDB allows
one configuration per database file in a process, and dbt runs in-process too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featsync.errors import FeatsyncError
from featsync.extras import needs
from featsync.offline.sql import identifier, literal, naive_utc
from featsync.project import Project
from featsync.registry.identifiers import identifier_problem

if TYPE_CHECKING:
    from featsync.registry import FeatureView

BATCH_ROWS = 65_536
# PostgreSQL: the ADBC driver cuts its COPY stream into batches of about this many bytes.
BATCH_BYTES = 16 << 20


def relation_name(schema: str, name: str, adapter_type: str = "duckdb") -> str:
    """The relation of table `name` in `schema` as SQL.

    Quoted on DuckDB and PostgreSQL (names are kept as given). Unquoted on Snowflake, where
    unquoted names fold to upper case: dbt creates its schemas unquoted, and a quoted
    lower-case name would be a different, case-sensitive one. On Spark, featsync's scratch
    tables are temporary views of the session, which have no schema.
    """
    if adapter_type == "snowflake":
        return f"{schema}.{name}"
    if adapter_type == "spark":
        return f"`{name}`"
    return f'"{schema}"."{name}"'


class Warehouse:
    """The operations featsync needs; one subclass per engine."""

    adapter_type: str
    schema: str
    con: Any
    text_type = "varchar"  # what `cast(x as ...)` to text is spelled; Spark's varchar needs a length

    def bind(self, value: Any, params: list[Any]) -> str:
        """SQL standing for one typed value (a watermark, a window bound, a seed): a literal
        rendered from the typed value (featsync.offline.sql.literal), or, on engines that
        bind without cost, a placeholder whose value is appended to `params`.

        PostgreSQL renders: ADBC runs a query with bound parameters as one prepared
        statement whose whole result libpq buffers (measured: 4x the memory of the
        streamed COPY path on 2M rows), which would undo push's bounded memory.
        Snowflake renders: its connector's default (pyformat) binding is client-side
        interpolation anyway, and would turn any '%' in dbt's SQL into a format error.
        """
        return literal(value, self.adapter_type)

    def time_column(self, column_sql: str, zoned: bool) -> tuple[str, bool]:
        """A timestamp column as featsync compares it with an instant bound: (SQL, still zoned).
        Engines with AT TIME ZONE keep the column and make the bound an instant (time_bound)."""
        return column_sql, zoned

    def time_bound(self, value: datetime, params: list[Any], zoned: bool) -> str:
        """An instant (a window bound, now) to compare with a timestamp column: the naive UTC
        value against a naive column; against a zoned one, that value made an instant in UTC
        (`at time zone 'UTC'`), so no session time zone converts either side."""
        sql = self.bind(value, params)
        return f"(cast({sql} as timestamp) at time zone 'UTC')" if zoned else sql

    def arrow_batches(self, sql: str, params: Sequence[Any] = (), batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The result of `sql` as record batches; `params` are the values `bind` collected."""
        raise NotImplementedError

    def fetch_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        batches = list(self.arrow_batches(sql, params))
        if not batches:
            raise FeatsyncError("the warehouse returned no result schema")
        return pa.Table.from_batches(batches)

    def _no_params(self, params: Sequence[Any]) -> None:
        if params:  # bind() rendered every value on this engine, so none can be pending
            raise TypeError(f"the {self.adapter_type} warehouse takes no bound parameters")

    def execute(self, sql: str) -> None:
        """Run a statement for its effect (DB-API connections: PostgreSQL's ADBC, Snowflake's connector)."""
        with closing(self.con.cursor()) as cursor:
            cursor.execute(sql)

    def relation(self, name: str) -> str:
        return relation_name(self.schema, name, self.adapter_type)

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
                self.con.execute(f"set {identifier(key)} = ?", [str(value)])
        except duckdb.Error as exc:
            raise FeatsyncError(f"cannot open DuckDB database {credentials.path}: {exc}") from exc

    def bind(self, value: Any, params: list[Any]) -> str:
        """DuckDB binds parameters and still streams the result. A datetime is bound as naive UTC:
        an aware one would be a TIMESTAMPTZ, compared in the session's time zone."""
        params.append(naive_utc(value) if isinstance(value, datetime) else value)
        return "?"

    def arrow_batches(self, sql: str, params: Sequence[Any] = (), batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        reader = self.con.sql(sql, params=list(params) or None).to_arrow_reader(batch_rows)
        empty = True
        for batch in reader:
            empty = False
            yield batch
        if empty:  # no rows: still give the result its schema (an empty spine, a `where 1 = 0` probe)
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)

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

    def __init__(self, credentials: Any, batch_bytes: int = BATCH_BYTES):
        with needs("postgres", "reading from PostgreSQL"):
            import adbc_driver_postgresql.dbapi as adbc

        self.schema = credentials.schema
        self.batch_bytes = batch_bytes
        try:
            self.con = adbc.connect(postgres_conninfo(credentials), autocommit=True)
        except Exception as exc:  # the driver raises its own error types
            reason = _without(str(exc), credentials.password)
            raise FeatsyncError(f"cannot connect to PostgreSQL at {credentials.host}:{credentials.port}: {reason}") from None

    def arrow_batches(self, sql: str, params: Sequence[Any] = (), batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        self._no_params(params)
        cursor = self.con.cursor()
        try:
            cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(self.batch_bytes)})
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
            empty = True
            for batch in reader:
                empty = False
                yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
            if empty:  # no rows: still give the result its schema
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
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


class SnowflakeWarehouse(Warehouse):
    """Snowflake through snowflake-connector, whose results are Arrow chunks.

    `fetch_arrow_batches()` yields one record batch per result chunk as the connector
    downloads it (Snowflake sizes the chunks, tens of MB at most), so a push or a training
    set never holds the whole result. The connection takes exactly dbt's authentication
    arguments (password, key pair, OAuth, ...), from the same profile.
    """

    adapter_type = "snowflake"

    def time_bound(self, value: datetime, params: list[Any], zoned: bool) -> str:
        """Snowflake has no AT TIME ZONE: against a zoned column, a TIMESTAMP_TZ literal at +00:00."""
        if not zoned:
            return self.bind(value, params)
        text = naive_utc(value).isoformat(sep=" ", timespec="microseconds")  # from the datetime, never from input
        return f"cast('{text} +00:00' as timestamp_tz)"

    def __init__(self, credentials: Any, paramstyle: str = "pyformat"):
        """`paramstyle`: the connector's default pyformat (bind() renders literals, see there),
        or "qmark" for server-side binding (the push log's INSERT: values never enter SQL text)."""
        with needs("snowflake", "reading from Snowflake"):
            import snowflake.connector

        self.schema = credentials.schema
        try:
            self.con = snowflake.connector.connect(
                account=credentials.account,
                database=credentials.database,
                schema=credentials.schema,
                warehouse=credentials.warehouse,
                role=credentials.role or None,
                autocommit=True,
                client_session_keep_alive=False,
                application="featsync",
                paramstyle=paramstyle,
                **credentials.auth_args(),
            )
        except Exception as exc:  # the connector and dbt's key loading raise several types
            raise FeatsyncError(f"cannot connect to Snowflake account {credentials.account!r}: {exc}") from exc

    def arrow_batches(self, sql: str, params: Sequence[Any] = (), batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        self._no_params(params)
        cursor = self.con.cursor()
        try:
            cursor.execute(sql)
            schema = None
            for table in cursor.fetch_arrow_batches():
                table = snowflake_names(table)
                schema = table.schema
                yield from table.to_batches(max_chunksize=batch_rows)
            if schema is None:  # no rows: the connector yields nothing, so give the empty result its schema
                empty = snowflake_names(cursor.fetch_arrow_all(force_return_table=True))
                yield pa.RecordBatch.from_pylist([], schema=empty.schema)
        finally:
            cursor.close()

    def create_table(self, name: str, table: pa.Table) -> None:
        """Create the table from the Arrow schema, then load it with the connector's `write_pandas`
        (Parquet files PUT to the table's stage, one COPY INTO).

        Names are unquoted (upper-cased by Snowflake, as the compiled SQL refers to them).
        The column types come from Arrow rather than from Snowflake's INFER_SCHEMA, so a
        naive UTC timestamp is a TIMESTAMP_NTZ and an integer stays an integer.
        """
        with needs("snowflake", "loading a spine into Snowflake"):
            from snowflake.connector.pandas_tools import write_pandas

        for field in table.schema:  # written unquoted below: only plain names
            problem = identifier_problem(field.name)
            if problem:
                raise FeatsyncError(f"spine column name {problem}")
        columns = ", ".join(f"{field.name} {snowflake_type(field)}" for field in table.schema)
        try:
            self.execute(f"create table {self.relation(name)} ({columns})")
            success, _, rows, _ = write_pandas(
                self.con, table.to_pandas(), name, schema=self.schema, quote_identifiers=False, use_logical_type=True
            )
        except Exception as exc:  # the connector raises several types (ProgrammingError, OSError, ...)
            raise FeatsyncError(f"cannot load the spine into Snowflake table {self.relation(name)}: {exc}") from exc
        if not success or rows != table.num_rows:
            raise FeatsyncError(f"loading the spine into {self.relation(name)} wrote {rows} of {table.num_rows} rows")

    def close(self) -> None:
        self.con.close()


class SparkWarehouse(Warehouse):
    """Spark through pyspark: the same SparkSession dbt-spark's session method uses.

    The session is built from the profile's `server_side_parameters` exactly as dbt-spark
    builds it, so in one process featsync and dbt share one JVM and one metastore (the
    embedded Derby metastore admits one JVM at a time). `spark.remote` among those
    parameters (or SPARK_REMOTE) makes it a Spark Connect session to a cluster instead.

    Results leave Spark as Arrow record batches one partition at a time (the JVM computes
    the next partition while Python consumes this one), so neither the driver nor this
    process ever holds the whole result; a spine becomes a temporary view of the session.
    """

    adapter_type = "spark"
    text_type = "string"

    def time_column(self, column_sql: str, zoned: bool) -> tuple[str, bool]:
        """Spark has no AT TIME ZONE: a zoned column's instant as naive UTC, counted in epoch
        microseconds so the session zone plays no part (package/macros/time.sql, spark__utc)."""
        if not zoned:
            return column_sql, False
        return f"timestampadd(MICROSECOND, unix_micros({column_sql}), timestamp_ntz'1970-01-01 00:00:00')", False

    def __init__(self, credentials: Any):
        if credentials.method != "session":
            raise FeatsyncError(
                f"featsync reads Spark through a SparkSession (method: session, locally or over Spark Connect "
                f"with spark.remote); the {credentials.method} method serves dbt only"
            )
        self.schema = credentials.schema
        self.con = spark_session(credentials)

    def arrow_batches(self, sql: str, params: Sequence[Any] = (), batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Values are rendered by `bind` as typed literals (timestamp_ntz), never bound: pyspark
        would type a naive datetime by the session's default timestamp type."""
        from pyspark.sql.pandas.types import to_arrow_schema

        self._no_params(params)

        frame = self.con.sql(sql)
        schema = to_arrow_schema(frame.schema, timezone="UTC")
        if not hasattr(frame, "_jdf"):  # Spark Connect: the client assembles the result itself
            table = frame.toArrow()
            yield from table.to_batches(max_chunksize=batch_rows) or [pa.RecordBatch.from_pylist([], schema=schema)]
            return
        emitted = False
        for batch in _partition_arrow_batches(self.con, frame, schema, batch_rows):
            emitted = True
            yield batch
        if not emitted:
            yield pa.RecordBatch.from_pylist([], schema=schema)

    def execute(self, sql: str) -> None:
        self.con.sql(sql)  # statements (DDL, DML) run eagerly

    def create_table(self, name: str, table: pa.Table) -> None:
        """The spine as a temporary view of the session: nothing is written to the warehouse."""
        self.con.createDataFrame(table).createOrReplaceTempView(name)

    def drop_table(self, relation: str) -> None:
        self.con.catalog.dropTempView(relation.strip("`"))

    def close(self) -> None:
        """Nothing: the session (and its JVM) is the process's, shared with dbt, and ends with it."""


def spark_session(credentials: Any) -> Any:
    """The SparkSession of a dbt-spark session target, built as dbt-spark builds it."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise FeatsyncError("the spark target needs pyspark: pip install 'featsync[spark]'") from exc
    builder = SparkSession.builder.enableHiveSupport()
    for key, value in credentials.server_side_parameters.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # no Java, a bad master URL, an unreachable Spark Connect server
        raise FeatsyncError(f"cannot start or reach Spark: {str(exc).strip().splitlines()[0]}") from exc
    if hasattr(session, "sparkContext"):  # classic (not Connect): keep the JVM's INFO/WARN lines off stderr
        session.sparkContext.setLogLevel("ERROR")
    return session


def _partition_arrow_batches(spark: Any, frame: Any, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The result of `frame` as Arrow batches of at most `batch_rows` rows, one partition at a time.

    Spark's own Arrow batches of the query (Dataset.toArrowBatchRdd, the RDD behind toPandas and
    toArrow) served like toLocalIterator: one job per partition, the next prefetched, each
    batch an Arrow IPC message decoded against the schema. toArrow() instead collects every
    partition into the driver first. The batch size is Spark's maxRecordsPerBatch, set for
    the plan and restored.
    """
    from pyspark.serializers import NoOpSerializer
    from pyspark.util import _local_iterator_from_socket

    conf = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(conf)
    spark.conf.set(conf, str(batch_rows))
    try:
        rdd = frame._jdf.toArrowBatchRdd()
    finally:
        spark.conf.set(conf, previous)
    served = spark._jvm.org.apache.spark.api.python.PythonRDD.toLocalIteratorAndServe(rdd, True)
    for message in _local_iterator_from_socket(served, NoOpSerializer()):
        batch = pa.ipc.read_record_batch(pa.py_buffer(message), schema)
        if batch.num_rows:
            yield batch


def snowflake_type(field: pa.Field) -> str:
    """The Snowflake column type of an Arrow field of a spine (keys, timestamps, labels)."""
    kind = field.type
    if pa.types.is_timestamp(kind):
        return "timestamp_ntz"
    for check, name in (
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "bigint"),
        (pa.types.is_floating, "float"),
        (pa.types.is_decimal, f"number({getattr(kind, 'precision', 38)}, {getattr(kind, 'scale', 0)})"),
        (pa.types.is_date, "date"),
        (lambda k: pa.types.is_string(k) or pa.types.is_large_string(k), "varchar"),
    ):
        if check(kind):
            return name
    raise FeatsyncError(f"spine column '{field.name}' has type {kind}, which featsync cannot load into Snowflake")


def snowflake_names(table: pa.Table) -> pa.Table:
    """Snowflake folds unquoted identifiers to upper case; featsync's names are dbt's lower-case ones."""
    names = [n.lower() if n == n.upper() else n for n in table.column_names]
    return table.rename_columns(names)


# What featsync passes on from a dbt PostgreSQL profile besides host, port, user, password, dbname.
POSTGRES_OPTIONS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout", "application_name")


def postgres_options(credentials: Any) -> dict[str, Any]:
    """The libpq connection parameters of a dbt PostgreSQL profile (TLS settings included)."""
    options = {
        "host": credentials.host,
        "port": credentials.port,
        "user": credentials.user,
        "password": credentials.password or None,
        "dbname": credentials.database,
    }
    options.update({key: getattr(credentials, key, None) for key in POSTGRES_OPTIONS})
    return {key: value for key, value in options.items() if value not in (None, "")}


def postgres_conninfo(credentials: Any) -> str:
    """A libpq connection string, quoted by psycopg2's make_dsn: a password with '@', '/',
    spaces or quotes arrives intact (a hand-built URI broke on them and leaked parts)."""
    from psycopg2.extensions import make_dsn

    return make_dsn(**postgres_options(credentials))


def postgres_sqlalchemy_url(credentials: Any) -> Any:
    """The same parameters as an SQLAlchemy URL (Great Expectations' SQL datasource); rendered
    with the password in, for GE's connection_string, by SQLAlchemy, which encodes it."""
    from sqlalchemy.engine import URL

    options = postgres_options(credentials)
    return URL.create(
        "postgresql+psycopg2",
        username=options.pop("user", None),
        password=options.pop("password", None),
        host=options.pop("host", None),
        port=options.pop("port", None),
        database=options.pop("dbname", None),
        query={key: str(value) for key, value in options.items()},
    )


def _without(text: str, secret: str | None) -> str:
    """A driver's message with a password removed, should it echo one."""
    return text.replace(secret, "***") if secret else text


ENGINES = {
    "duckdb": DuckDBWarehouse,
    "postgres": PostgresWarehouse,
    "snowflake": SnowflakeWarehouse,
    "spark": SparkWarehouse,
}


def profile_credentials(project: Project) -> Any:
    """The target's credentials: read without dbt when that is exact (featsync.offline.profiles:
    DuckDB and PostgreSQL targets of plain YAML and env_var), else rendered by dbt's own
    profile loader (any Jinja, every engine), which costs about a second to import."""
    from featsync.offline.profiles import light_credentials

    credentials = light_credentials(project)
    if credentials is not None:
        return credentials
    return dbt_credentials(project)


def dbt_credentials(project: Project) -> Any:
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
        reason = str(exc).strip()
        if "Could not find adapter type" in reason:
            from featsync.extras import require_adapter
            from featsync.offline.profiles import target_type

            require_adapter(target_type(project) or reason.rsplit(" ", 1)[-1].strip("!. "), project.target)
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


# The base error class of each engine's driver, by module: DuckDB, PostgreSQL's ADBC, Snowflake's connector,
# Spark's (pyspark's own errors, and py4j's for a failure inside the JVM).
DRIVER_ERRORS = {
    "duckdb": "Error",
    "adbc_driver_manager": "Error",
    "snowflake.connector.errors": "Error",
    "pyspark.errors": "PySparkException",
    "py4j.protocol": "Py4JError",
}


def driver_errors() -> tuple[type[BaseException], ...]:
    """The driver error classes of the engines loaded in this process (a driver never imported raised nothing)."""
    return tuple(getattr(sys.modules[module], name) for module, name in DRIVER_ERRORS.items() if module in sys.modules)


@contextmanager
def reading(view: FeatureView) -> Iterator[None]:
    """The engines' own errors (a table not built, a lost connection) as one clear FeatsyncError."""
    with warehouse_errors(
        f"cannot read feature view '{view.name}' ({view.relation}) from the warehouse", "(has dbt built it on this target?)"
    ):
        yield


@contextmanager
def warehouse_errors(what: str, hint: str = "") -> Iterator[None]:
    """An engine's own error (DuckDB, ADBC for PostgreSQL, Snowflake's connector) as one line:
    `what: the engine's first line [hint]`."""
    try:
        yield
    except driver_errors() as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FeatsyncError(f"{what}: {reason}{' ' + hint if hint else ''}") from exc
