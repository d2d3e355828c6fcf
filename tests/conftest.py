"""Shared fixtures: one real dbt build per engine per test run.

Services are real: DuckDB in a temp file, PostgreSQL on 127.0.0.1:5432 (own schema,
dropped afterwards). When a service is missing the tests that need it skip locally
and fail under CI (CI=true), so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent
# featsync as a dbt package (macros only): what another project lists in its packages.yml.
PACKAGE = ROOT / "package"
# The example project's sources: everything dbt and featsync read (no data, target or venv).
PROJECT_FILES = ("dbt_project.yml", "profiles.yml")
PROJECT_FOLDERS = ("models", "macros", "package", "seeds", "snapshots", "expectations")
# The reference time of freshness expectations for the unshifted example data (it ends 2024-04-29).
EXAMPLE_NOW = "2024-04-30T00:00:00Z"
PG_DSN = dict(
    host=os.environ.get("FEATSYNC_PG_HOST", "127.0.0.1"),
    port=int(os.environ.get("FEATSYNC_PG_PORT", "5432")),
    user=os.environ.get("FEATSYNC_PG_USER", "postgres"),
    dbname=os.environ.get("FEATSYNC_PG_DATABASE", "test"),
)

os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


def missing_service(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@dataclass
class Build:
    """A dbt project built once on one engine for the whole test run."""

    project: Project
    target_path: Path
    schema: str

    @property
    def scratch_path(self) -> Path:
        """A copy of the build's target path for `dbt compile --inline` and the like: they rewrite
        manifest.json without the models' compiled code, which later tests read from target_path
        (the copy keeps partial parsing quick)."""
        scratch = self.target_path.with_name(self.target_path.name + "-scratch")
        if not scratch.exists():
            shutil.copytree(self.target_path, scratch)
        return scratch

    def manifest_registry(self):
        import json

        from featsync.registry import Registry

        with (self.target_path / "manifest.json").open() as fh:
            return Registry.from_manifest(json.load(fh))


@pytest.fixture(scope="session")
def tmp_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("featsync")


@pytest.fixture(scope="session", autouse=True)
def _dbt_logs(tmp_session: Path) -> None:
    # dbt writes logs/ into the project by default; keep test runs out of the tree.
    os.environ["DBT_LOG_PATH"] = str(tmp_session / "dbt-logs")
    # The example's streaming view reads its DuckDB push log (default data/pushed, relative to
    # the working directory): never a developer's pushed rows, only what the tests push.
    os.environ["FEATSYNC_PUSH_LOG_DIR"] = str(tmp_session / "pushed")


@pytest.fixture(scope="session")
def duckdb_build(tmp_session: Path) -> Iterator[Build]:
    """The whole example project built on DuckDB (seeds, snapshot, models, tests)."""
    db = tmp_session / "featsync.duckdb"
    os.environ["FEATSYNC_DUCKDB_PATH"] = str(db)
    project = Project.open(ROOT, ROOT, "dev")
    target_path = tmp_session / "target-duckdb"
    project.run_dbt(["build"], target_path=target_path)
    yield Build(project, target_path, "main")


@pytest.fixture
def duck_ro(duckdb_build):
    """A read-only connection to the DuckDB build for one test only: a session-wide one would
    stay open and keep later tests (dbt, in this process) from opening the file read-write."""
    con = duckdb.connect(os.environ["FEATSYNC_DUCKDB_PATH"], read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="session")
def pg_dsn() -> dict:
    try:
        import psycopg2

        psycopg2.connect(connect_timeout=3, **PG_DSN).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        missing_service("PostgreSQL at {host}:{port}".format(**PG_DSN), exc)
    return PG_DSN


@pytest.fixture(scope="session")
def postgres_build(pg_dsn: dict, tmp_session: Path) -> Iterator[Build]:
    """The whole example project built on PostgreSQL, in a schema of its own."""
    import psycopg2

    schema = f"featsync_test_{uuid.uuid4().hex[:8]}"
    os.environ["FEATSYNC_PG_SCHEMA"] = schema
    project = Project.open(ROOT, ROOT, "postgres")
    target_path = tmp_session / "target-postgres"
    try:
        project.run_dbt(["build"], target_path=target_path)
        yield Build(project, target_path, schema)
    finally:
        with psycopg2.connect(**pg_dsn) as con, con.cursor() as cur:
            for suffix in ("", "_raw", "_snapshots"):
                cur.execute(f'drop schema if exists "{schema}{suffix}" cascade')


SNOWFLAKE_EMULATOR_PROFILES = ROOT / "tests" / "snowflake_emulator"


@pytest.fixture(scope="session")
def snowflake_build(tmp_session: Path) -> Iterator[Build]:
    """The whole example project built twice on the Snowflake emulator (tests/snowflake_emulator).

    The second `dbt build` runs the snapshot's MERGE path (and any incremental model's) over
    the first run's tables. The emulator runs in this process, in memory, for the session.
    """
    from snowflake_emulator import serve

    schema = f"FEATSYNC_TEST_{uuid.uuid4().hex[:8].upper()}"
    env = {
        "SNOWFLAKE_ACCOUNT": "emulated",
        "SNOWFLAKE_USER": "featsync",
        "SNOWFLAKE_PASSWORD": "emulated",
        "SNOWFLAKE_WAREHOUSE": "EMULATED",
        "SNOWFLAKE_DATABASE": "FEATSYNC",
        "SNOWFLAKE_SCHEMA": schema,
    }
    with serve() as port:
        os.environ.update(env, FEATSYNC_SNOWFLAKE_EMULATOR_PORT=str(port))
        project = Project.open(ROOT, SNOWFLAKE_EMULATOR_PROFILES, "snowflake")
        target_path = tmp_session / "target-snowflake"
        for _ in range(2):
            project.run_dbt(["build"], target_path=target_path)
        yield Build(project, target_path, schema)


SPARK_SCHEMA = "featsync"


@pytest.fixture(scope="session")
def spark_session(tmp_session: Path) -> Any:
    """One local Spark JVM for the whole run, shared by every Spark test and by dbt-spark.

    It is built from the shipped `spark` target (featsync's SparkWarehouse builds it exactly as
    dbt-spark's session method does), with its warehouse directory and Derby metastore in this
    run's temp folder, so dbt and featsync in this process find the same session and tables.
    """
    os.environ["FEATSYNC_SPARK_DIR"] = str(tmp_session / "spark")
    os.environ["FEATSYNC_SPARK_SHUFFLE_PARTITIONS"] = "2"
    os.environ["FEATSYNC_SPARK_SCHEMA"] = SPARK_SCHEMA
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        missing_service("pyspark (pip install '.[spark]')", exc)
    if shutil.which("java") is None:
        missing_service("Java (Spark needs a JVM)", FileNotFoundError("java is not on PATH"))
    from featsync.errors import FeatsyncError
    from featsync.offline.warehouse import connect

    try:
        with connect(Project.open(ROOT, ROOT, "spark")) as warehouse:
            return warehouse.con
    except FeatsyncError as exc:
        missing_service("a local Spark session", exc)


@pytest.fixture(scope="session")
def spark_build(spark_session: Any, tmp_session: Path) -> Iterator[Build]:
    """The whole example project built on Spark (local session, parquet tables), then its
    snapshot run a second time: the parquet snapshot's rewrite path (no MERGE) over the first
    run's table. tests/test_spark.py changes the snapshot's source between runs as well."""
    project = Project.open(ROOT, ROOT, "spark")
    target_path = tmp_session / "target-spark"
    project.run_dbt(["build"], target_path=target_path)
    project.run_dbt(["snapshot"], target_path=target_path)
    yield Build(project, target_path, SPARK_SCHEMA)


@pytest.fixture(scope="session")
def pg_args(postgres_build: Build, tmp_session: Path) -> list[str]:
    """CLI arguments for the PostgreSQL build. A copy of the project: featsync's manifest cache
    lives in the project and names the relations of the schema it was parsed for (a per-run one)."""
    return ["--project-dir", str(copy_project(tmp_session / "pg-cli" / "project")), "--target", "postgres"]


@pytest.fixture(scope="session")
def sf_args(snowflake_build: Build, tmp_session: Path) -> list[str]:
    """CLI arguments for the emulated Snowflake build, on a copy of the project (as pg_args)."""
    project = copy_project(tmp_session / "sf-cli" / "project")
    return ["--project-dir", str(project), "--profiles-dir", str(SNOWFLAKE_EMULATOR_PROFILES), "--target", "snowflake"]


@pytest.fixture(scope="session")
def pg_con(postgres_build: Build, pg_dsn: dict):
    import psycopg2

    con = psycopg2.connect(**pg_dsn, options=f"-c search_path={postgres_build.schema}")
    con.autocommit = True
    yield con
    con.close()


def copy_project(dest: Path) -> Path:
    """A private copy of the dbt project with its expectation suites (sources only: no data, target or venv)."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, dest / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(ROOT / name, dest / name)
    return dest


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of the project that a test may break."""
    return copy_project(tmp_path / "project")


PIT_TABLES = {
    "user_rows": "user_id text, event_timestamp timestamp, created_timestamp timestamp, amount bigint, label text",
    "pair_rows": "user_id text, merchant_id text, event_timestamp timestamp, score float8",
    "profile_rows": "user_id text, event_timestamp timestamp, valid_to timestamp, tier text",
    "spine": "spine_id bigint, user_id text, shop_id text, ts timestamp",
    # The same shapes with zoned timestamps, some mixed with naive ones in one view
    # (tests/test_point_in_time.py: the oracle's zoned variants).
    "user_rows_tz": "user_id text, event_timestamp timestamptz, created_timestamp timestamp, amount bigint, label text",
    "pair_rows_tz": "user_id text, merchant_id text, event_timestamp timestamptz, score float8",
    "profile_rows_tz": "user_id text, event_timestamp timestamp, valid_to timestamptz, tier text",
    "spine_tz": "spine_id bigint, user_id text, shop_id text, ts timestamptz",
}


def build_pit_project(tmp: Path, target: str, execute) -> Project:
    """A copy of tests/pit_project (featsync as a local package) built on `target`.

    `execute` runs SQL on the target's schema; the source tables are created with it
    first, so that dbt can build the feature views (plain views) over them.
    """
    dest = tmp / f"pit_project_{target}"
    shutil.copytree(ROOT / "tests" / "pit_project", dest)
    (dest / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n")
    for table, columns in PIT_TABLES.items():
        execute(f"create table {table} ({columns})")
    if target == "postgres":
        # Text columns with a collation that orders 'Y' after 'y' (ICU), declared with a length:
        # ties must still break bytewise, as on the other engines.
        execute('alter table user_rows_tz alter column label type varchar(20) collate "und-x-icu"')
        execute('alter table profile_rows_tz alter column tier type varchar(20) collate "und-x-icu"')
    project = Project.open(dest, dest, target)
    project.run_dbt(["deps"])
    project.run_dbt(["run"])
    return project


@dataclass
class PitPostgres:
    """The pit project on PostgreSQL: the project, an autocommit connection on its schema, and
    `execute(sql, params)` on that connection."""

    project: Project
    con: Any

    def execute(self, query: str, params: Any = None) -> None:
        with self.con.cursor() as cur:
            cur.execute(query, params)


@pytest.fixture(scope="session")
def pit_postgres(tmp_session: Path, pg_dsn: dict) -> Iterator[PitPostgres]:
    """tests/pit_project built once per run on PostgreSQL, in a schema of its own
    (FEATSYNC_PIT_PG_SCHEMA) dropped at the end. Tests fill its source tables themselves
    (delete, then insert), so one build serves every module."""
    import psycopg2

    schema = f"featsync_pit_{uuid.uuid4().hex[:8]}"
    os.environ["FEATSYNC_PIT_PG_SCHEMA"] = schema
    con = psycopg2.connect(**pg_dsn, options=f"-c search_path={schema}")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(f'create schema "{schema}"')

        def execute(sql: str) -> None:
            with con.cursor() as cur:
                cur.execute(sql)

        yield PitPostgres(build_pit_project(tmp_session, "postgres", execute), con)
    finally:
        with con.cursor() as cur:
            cur.execute(f'drop schema if exists "{schema}" cascade')
        con.close()


def spark_pit_project(tmp: Path) -> Project:
    """The pit project on Spark, compiled only: the property tests hold each example's rows in
    session temporary views (parquet writes per example would be far slower than the join)."""
    dest = tmp / "pit_project_spark"
    shutil.copytree(ROOT / "tests" / "pit_project", dest)
    (dest / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n")
    project = Project.open(dest, dest, "spark")
    project.run_dbt(["deps"])
    return project


@pytest.fixture(scope="session")
def pit_duckdb(tmp_session: Path) -> Project:
    """tests/pit_project built once per run on a DuckDB file of its own (FEATSYNC_PIT_DUCKDB_PATH
    points at it). Tests fill its source tables themselves (delete, then insert) through
    short-lived connections: dbt and featsync open the same file in this process."""
    path = str(tmp_session / "pit.duckdb")
    os.environ["FEATSYNC_PIT_DUCKDB_PATH"] = path

    def execute(sql: str) -> None:
        with duckdb.connect(path) as con:
            con.execute(sql)

    return build_pit_project(tmp_session, "duckdb", execute)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the tests use (127.0.0.1:6379 unless FEATSYNC_TEST_REDIS_URL says otherwise)."""
    import redis

    url = os.environ.get("FEATSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        missing_service(f"Redis at {url}", exc)
    return url


def pushed_keys(project: Project, client: Any, prefix: str, select: tuple[str, ...] = ()) -> dict[str, list[bytes]]:
    """Each online feature view's keys under key prefix `prefix`: its entities' keys and its
    state hash (`fs:<view id>`, see featsync.online.layout), found with one SCAN pattern per view."""
    from featsync.online.push import Pusher

    pusher = Pusher(project, client, key_prefix=prefix)
    patterns = {view.name: f"{pusher.layout(view).state_key}*" for view in pusher.views(select)}
    return {name: list(client.scan_iter(match=pattern, count=10_000)) for name, pattern in patterns.items()}


def assert_jobs_push_what_one_job_pushes(project: Project, client: Any, now: str, jobs: int = 3) -> None:
    """`push --jobs N` on `project`'s engine (slices hashed in its warehouse: offline.sql.slice_number)
    writes exactly the keys and values of a push in one job, and reports the same counts."""
    from datetime import datetime

    from featsync.online.push import Pusher

    instant = datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp()
    prefixes = [f"featsync-test-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        stats, contents = [], []
        for prefix, n in zip(prefixes, (1, jobs), strict=True):
            pusher = Pusher(project, client, key_prefix=prefix, now=lambda: instant)
            stats.append({s.feature_view: (s.rows_read, s.keys_written, s.skipped_expired) for s in pusher.push(jobs=n)})
            online = {}
            for view in pusher.views():
                start = pusher.layout(view).prefix.encode()
                for key in client.scan_iter(match=start + b"*", count=10_000):
                    online[(view.name, key[len(start) :])] = client.get(key)
            contents.append(online)
        assert stats[0] == stats[1], stats
        # Keys whose expiry (event time + ttl) is before the real clock are gone at once: compare what stays.
        assert contents[0] == contents[1] and len(contents[0]) > 0
    finally:
        for prefix in prefixes:
            delete_pushed_keys(project, client, prefix)


def delete_pushed_keys(project: Project, client: Any, prefix: str) -> None:
    """Clean up after a test: every key a push under `prefix` may have written."""
    keys = [key for keys in pushed_keys(project, client, prefix).values() for key in keys]
    if keys:
        client.delete(*keys)


# -- tests/types_project: real-world time and types (featsync as a package) -----------------

TYPES_PRECISIONS = {  # the table of each feature view: its timestamp type per engine (None: not there)
    "s": {"duckdb": "timestamp_s", "postgres": "timestamp(0)", "spark": None},
    "ms": {"duckdb": "timestamp_ms", "postgres": "timestamp(3)", "spark": None},
    "us": {"duckdb": "timestamp", "postgres": "timestamp", "spark": "timestamp_ntz"},
    "ns": {"duckdb": "timestamp_ns", "postgres": None, "spark": None},
    "tz": {"duckdb": "timestamptz", "postgres": "timestamptz", "spark": "timestamp_ltz"},
}


def types_tables(target: str) -> dict[str, str]:
    """Source tables of tests/types_project on `target`: rows_<precision> and shape_rows_<precision>."""
    tables = {}
    for precision, types in TYPES_PRECISIONS.items():
        ts = types[target]
        if ts is None:
            continue
        created = "created_at timestamp, " if precision == "tz" else ""
        tables[f"rows_{precision}"] = (
            f"entity_id text, event_timestamp {ts}, {created}seen_at {ts}, "
            "amount double precision, n bigint, flag boolean, note text"
        )
        if precision in ("s", "ms", "us"):
            tables[f"shape_rows_{precision}"] = (
                f"k_text text, k_int bigint, event_timestamp {ts}, f_float double precision, f_int bigint, f_text text, "
                "f_bool boolean, f_ts timestamp"
            )
    return tables


def build_types_project(tmp: Path, target: str, execute) -> Project:
    """A copy of tests/types_project (featsync as a local package) with its tables, built on `target`."""
    dest = tmp / f"types_project_{target}"
    shutil.copytree(ROOT / "tests" / "types_project", dest)
    (dest / "packages.yml").write_text(f"packages:\n  - local: {PACKAGE}\n")
    for table, columns in types_tables(target).items():
        execute(f"create table {table} ({columns})")
    project = Project.open(dest, dest, target)
    project.run_dbt(["deps"])
    project.run_dbt(["run"])
    return project


@pytest.fixture(scope="session")
def types_duckdb(tmp_session: Path) -> Project:
    """tests/types_project on a DuckDB file of its own (FEATSYNC_TYPES_DUCKDB_PATH) whose
    session time zone is America/New_York (profiles.yml): nothing may depend on it."""
    path = str(tmp_session / "types.duckdb")
    os.environ["FEATSYNC_TYPES_DUCKDB_PATH"] = path

    def execute(sql: str) -> None:
        with duckdb.connect(path) as con:
            con.execute(sql)

    return build_types_project(tmp_session, "duckdb", execute)


def types_duckdb_execute(sql: str, params: list | None = None) -> None:
    """Run SQL on the types project's DuckDB file in a short-lived connection (featsync opens it next)."""
    with duckdb.connect(os.environ["FEATSYNC_TYPES_DUCKDB_PATH"]) as con:
        con.execute(sql, params or [])
