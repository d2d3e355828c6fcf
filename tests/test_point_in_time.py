"""featsync.point_in_time_join against a brute-force Python oracle, on real engines.

Hypothesis draws feature rows and spines full of edge cases: equal event times,
created-time ties, matches exactly at the TTL bound, NULL keys and timestamps, composite
keys, a spine column mapped to another join key name, SCD2 validity and backfilled rows.
Each example is loaded into the warehouse and joined by SQL the macro generated once per
path (DuckDB ASOF, DuckDB LATERAL, Postgres LATERAL) and mode (event, available).

Zoned timestamps: every example is also loaded into copies of the tables whose time
columns are zoned (timestamptz; some views mix zoned and naive columns), each value written
as the same instant in a different UTC offset, and joined again with a zoned spine, with
zoned views, and with both. The queries run in a session whose time zone is not UTC
(America/New_York, with a DST change inside the data), so a comparison that let the
session zone convert a naive side would give other rows. Every variant must equal the
same oracle, which sees naive UTC.

Spark (the sort-based as-of join, spark__point_in_time_join) runs every variant too, zoned
columns as TIMESTAMP_LTZ, in a New York session, with fewer examples (each costs a few Spark
jobs), never none.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import PIT_TABLES, spark_pit_project
from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent
BASE = datetime(2024, 3, 10, 3)  # America/New_York moves its clocks at 07:00 UTC that day
HOUR = timedelta(hours=1)
SESSION_ZONE = "America/New_York"
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((5, 45), (-8, 0), (0, 0), (13, 0), (-3, -30))]
# (spine table, feature views suffix): the naive run and the three zoned variants.
VARIANTS = {
    "naive": ("spine", ""),
    "zoned spine": ("spine_tz", ""),
    "zoned views": ("spine", "_tz"),
    "zoned": ("spine_tz", "_tz"),
}
# Which columns of each table are zoned in its _tz copy (conftest.PIT_TABLES).
ZONED = {"user_rows": {1}, "pair_rows": {2}, "profile_rows": {2}, "spine": {3}}


# The feature views of tests/pit_project, as the oracle needs them.
@dataclass(frozen=True)
class View:
    table: str
    keys: tuple[str, ...]  # join keys in the view
    spine_keys: tuple[str, ...]  # the spine columns they match
    columns: tuple[str, ...]  # declared order
    created: str | None
    valid_to: str | None
    ttl: timedelta | None
    features: tuple[str, ...]


VIEWS = (
    View(
        "user_rows",
        ("user_id",),
        ("user_id",),
        ("user_id", "event_timestamp", "created_timestamp", "amount", "label"),
        "created_timestamp",
        None,
        3 * HOUR,
        ("amount", "label"),
    ),
    View(
        "pair_rows",
        ("user_id", "merchant_id"),
        ("user_id", "shop_id"),
        ("user_id", "merchant_id", "event_timestamp", "score"),
        None,
        None,
        None,
        ("score",),
    ),
    View(
        "profile_rows",
        ("user_id",),
        ("user_id",),
        ("user_id", "event_timestamp", "valid_to", "tier"),
        None,
        "valid_to",
        5 * HOUR,
        ("tier",),
    ),
)
FEATURES = "['fv_user{0}:amount', 'fv_user{0}:label', 'fv_pair{0}:score', 'fv_profile{0}:tier']"

# -- the oracle -----------------------------------------------------------------------------


def oracle(spine: list[tuple], rows: dict[str, list[tuple]], as_of: str) -> Counter:
    """Brute force: for each spine row and view, the best usable row, then TTL and validity."""
    out = Counter()
    for spine_id, user_id, shop_id, ts in spine:
        spine_row = {"user_id": user_id, "shop_id": shop_id}
        result = [spine_id]
        for view in VIEWS:
            wanted = [spine_row[k] for k in view.spine_keys]
            best = None
            if ts is not None and None not in wanted:
                candidates = []
                for raw in rows[view.table]:
                    r = dict(zip(view.columns, raw, strict=True))
                    if [r[k] for k in view.keys] != wanted or r["event_timestamp"] is None or r["event_timestamp"] > ts:
                        continue
                    if as_of == "available" and view.created and (r[view.created] or r["event_timestamp"]) > ts:
                        continue
                    candidates.append(r)
                if candidates:
                    best = max(candidates, key=lambda r: order_key(view, r))
            usable = (
                best is not None
                and (view.ttl is None or best["event_timestamp"] >= ts - view.ttl)
                and (view.valid_to is None or best[view.valid_to] is None or ts < best[view.valid_to])
            )
            result += [best[f] if usable else None for f in view.features]
        out[tuple(result)] += 1
    return out


def order_key(view: View, row: dict) -> tuple:
    """Event time, created time, then the other non-key columns in declared order; NULL lowest."""
    order = ["event_timestamp"] + ([view.created] if view.created else [])
    order += [c for c in view.columns if c not in view.keys and c not in order]
    return tuple((0,) if row[c] is None else (1, row[c]) for c in order)


# -- data -----------------------------------------------------------------------------------

times = st.integers(0, 8).map(lambda h: BASE + h * HOUR)
maybe_time = st.one_of(times, times, times, st.none())  # NULL event times now and then
users = st.sampled_from(["a", "b", "é", None])
user_rows = st.lists(
    st.builds(
        lambda u, t, lag, amount, label: (u, t, None if lag is None or t is None else t + lag * HOUR, amount, label),
        users,
        maybe_time,
        st.one_of(st.none(), st.integers(0, 3)),
        st.one_of(st.none(), st.integers(0, 3)),
        st.sampled_from([None, "x", "y", "Y"]),
    ),
    max_size=12,
)
pair_rows = st.lists(
    st.tuples(users, st.sampled_from(["m1", "m2", None]), maybe_time, st.one_of(st.none(), st.sampled_from([0.5, 1.25, -2.0]))),
    max_size=8,
)
profile_rows = st.lists(
    st.builds(
        lambda u, t, span, tier: (u, t, None if span is None or t is None else t + span * HOUR, tier),
        users,
        maybe_time,
        st.one_of(st.none(), st.integers(0, 4)),
        st.sampled_from([None, "gold", "Gold", "silver"]),
    ),
    max_size=6,
)
spines = st.lists(st.tuples(users, st.sampled_from(["m1", "m2", None]), maybe_time), min_size=1, max_size=10).map(
    lambda rows: [(i % 4, *row) for i, row in enumerate(rows)]
)  # spine_id repeats: duplicates kept

# -- engines --------------------------------------------------------------------------------


def zoned(table: str, rows: list[tuple]) -> list[tuple]:
    """The rows for the table's _tz copy: each zoned value the same instant, in some other offset."""
    columns = ZONED[table]
    return [
        tuple(
            v.replace(tzinfo=UTC).astimezone(OFFSETS[(i + j) % len(OFFSETS)]) if j in columns and v is not None else v
            for j, v in enumerate(row)
        )
        for i, row in enumerate(rows)
    ]


class Engine:
    """A built copy of tests/pit_project on one engine plus the SQL compiled for each variant."""

    def __init__(self, project: Project, execute, insert, sql: dict[tuple[str, str, str], str]):
        self.project, self.execute, self.insert, self.sql = project, execute, insert, sql

    def load(self, spine, user, pair, profile) -> None:
        for table, rows in (("spine", spine), ("user_rows", user), ("pair_rows", pair), ("profile_rows", profile)):
            for name, values in ((table, rows), (f"{table}_tz", zoned(table, rows))):
                self.execute(f"delete from {name}")
                if values:
                    self.insert(name, values)

    def run(self, as_of: str, strategy: str, spine, user, pair, profile) -> dict[str, Counter]:
        """Every variant's rows (spine_id and the features) for one example."""
        self.load(spine, user, pair, profile)
        columns = "spine_id, amount, label, score, tier"
        return {
            variant: Counter(self.execute(f"select {columns} from ({self.sql[as_of, strategy, variant]}) as j", fetch=True))
            for variant in VARIANTS
        }


def compile_variants(project: Project, modes: list[tuple[str, str]]) -> dict:
    """The join SQL for each (as_of, strategy, variant) and featsync.latest_rows per view,
    compiled by one dbt call (parts split at a marker comment)."""
    parts = {}
    for as_of, strategy in modes:
        for variant, (spine, suffix) in VARIANTS.items():
            parts[as_of, strategy, variant] = (
                f"{{{{ featsync.point_in_time_join(spine=source('pit_raw', '{spine}'), features={FEATURES.format(suffix)}, "
                f"spine_timestamp='ts', join_key_map={{'merchant_id': 'shop_id'}}, as_of='{as_of}', "
                f"strategy='{strategy}') }}}}"
            )
    for name in ("fv_user", "fv_pair", "fv_profile", "fv_user_tz", "fv_pair_tz", "fv_profile_tz"):
        parts["latest", name] = f"{{{{ featsync.latest_rows('{name}') }}}}"
    marker = "-- featsync-test:next"
    compiled = project.run_dbt(["compile", "--inline", f"\n{marker}\n".join(parts.values())])
    sql = compiled.result.results[0].node.compiled_code.split(marker)
    return {key: part.strip() for key, part in zip(parts, sql, strict=True)}


@pytest.fixture(scope="module")
def duck(pit_duckdb) -> Engine:
    project = pit_duckdb
    sql = compile_variants(project, [(a, s) for a in ("event", "available") for s in ("asof", "lateral")])
    con = duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"])
    con.execute(f"set TimeZone = '{SESSION_ZONE}'")

    def execute(query, fetch=False):
        cursor = con.execute(query)
        return cursor.fetchall() if fetch else None

    def insert(table, rows):
        con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", rows)

    yield Engine(project, execute, insert, sql)
    con.close()


@pytest.fixture(scope="module")
def pg(pit_postgres) -> Engine:
    from psycopg2.extras import execute_values

    con = pit_postgres.con
    with con.cursor() as cur:  # this module's session zone; reset for the other modules at the end
        cur.execute(f"set timezone = '{SESSION_ZONE}'")

    def execute(query, fetch=False):
        with con.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if fetch else None

    def insert(table, rows):
        with con.cursor() as cur:
            execute_values(cur, f"insert into {table} values %s", rows)

    sql = compile_variants(pit_postgres.project, [("event", "lateral"), ("available", "lateral")])
    yield Engine(pit_postgres.project, execute, insert, sql)
    with con.cursor() as cur:
        cur.execute("reset timezone")


SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPARK_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# The Spark column types of conftest.PIT_TABLES: zoned columns are TIMESTAMP_LTZ, naive ones TIMESTAMP_NTZ.
SPARK_WORDS = {
    "text": "string", "timestamp": "timestamp_ntz", "timestamptz": "timestamp_ltz", "float8": "double", "bigint": "bigint"
}  # fmt: skip
SPARK_TYPES = {
    table: ", ".join(f"{name} {SPARK_WORDS[kind]}" for name, kind in (c.split() for c in columns.split(", ")))
    for table, columns in PIT_TABLES.items()
}
# The pit project's relations and the session temporary views holding an example's rows.
SPARK_VIEWS = {"fv_user": "user_rows", "fv_pair": "pair_rows", "fv_profile": "profile_rows", "spine": "spine"}
SPARK_SCHEMA = "featsync_pit"  # the spark target's schema in tests/pit_project/profiles.yml


class SparkEngine(Engine):
    """Every variant, its rows as temporary views of the session; the four variants of an
    example run as one query (a UNION ALL tagged by variant), one round of Spark jobs."""

    def load(self, spine, user, pair, profile) -> None:
        for table, rows in (("spine", spine), ("user_rows", user), ("pair_rows", pair), ("profile_rows", profile)):
            self.insert(table, rows)
            self.insert(f"{table}_tz", zoned(table, rows))

    def run(self, as_of: str, strategy: str, spine, user, pair, profile) -> dict[str, Counter]:
        self.load(spine, user, pair, profile)
        columns = "spine_id, amount, label, score, tier"
        union = " union all ".join(
            f"select '{variant}' as variant, {columns} from ({self.sql[as_of, strategy, variant]}) as j" for variant in VARIANTS
        )
        out: dict[str, Counter] = {variant: Counter() for variant in VARIANTS}
        for variant, *row in self.execute(union, fetch=True):
            out[variant][tuple(row)] += 1
        return out


@pytest.fixture(scope="module")
def spark(tmp_path_factory, spark_session) -> Engine:
    """Spark: each example's rows become temporary views of the session, and the compiled SQL's
    relations (featsync_pit.fv_user, ...) are pointed at them; the SQL is otherwise the macro's.

    The two spine tables exist (empty) while the SQL compiles, so the macro reads the spine's
    column types from Spark as it does for a user's spine (DESCRIBE: `timestamp` is LTZ). The
    queries run in a session whose time zone is not UTC, like DuckDB's and Postgres's here."""
    spark_session.sql(f"drop schema if exists {SPARK_SCHEMA} cascade")  # left over by an interrupted run
    spark_session.sql(f"create schema {SPARK_SCHEMA}")
    for table in ("spine", "spine_tz"):
        spark_session.sql(f"create table {SPARK_SCHEMA}.{table} ({SPARK_TYPES[table]}) using parquet")
    try:
        project = spark_pit_project(tmp_path_factory.mktemp("pit-spark"))
        compiled = compile_variants(project, [("event", "asof"), ("available", "asof")])
    finally:
        spark_session.sql(f"drop schema {SPARK_SCHEMA} cascade")
    sql = {}
    for key, text in compiled.items():
        for relation, view in SPARK_VIEWS.items():
            text = text.replace(f"{SPARK_SCHEMA}.{relation}", f"featsync_pit_{view}")
        assert f"{SPARK_SCHEMA}." not in text, text
        sql[key] = text

    def execute(query, fetch=False):
        # Through Arrow: a zoned (LTZ) value comes back as an aware datetime.
        return [tuple(r.values()) for r in spark_session.sql(query).toArrow().to_pylist()] if fetch else None

    def insert(table, rows):
        spark_session.createDataFrame(rows, SPARK_TYPES[table]).createOrReplaceTempView(f"featsync_pit_{table}")

    zone = spark_session.conf.get("spark.sql.session.timeZone")
    spark_session.conf.set("spark.sql.session.timeZone", SESSION_ZONE)
    try:
        yield SparkEngine(project, execute, insert, sql)
    finally:
        spark_session.conf.set("spark.sql.session.timeZone", zone)
        for table in PIT_TABLES:
            spark_session.catalog.dropTempView(f"featsync_pit_{table}")


@pytest.mark.parametrize("as_of", ["event", "available"])
@pytest.mark.parametrize("strategy", ["asof", "lateral"])
@SETTINGS
@given(spine=spines, user=user_rows, pair=pair_rows, profile=profile_rows)
def test_duckdb_matches_oracle(duck, strategy, as_of, spine, user, pair, profile):
    expected = oracle(spine, {"user_rows": user, "pair_rows": pair, "profile_rows": profile}, as_of)
    assert duck.run(as_of, strategy, spine, user, pair, profile) == dict.fromkeys(VARIANTS, expected)


# Ties that only a bytewise order breaks the same everywhere: 'y' > 'Y' bytewise, but 'Y'
# sorts after 'y' under the ICU collation of the _tz tables' text columns on PostgreSQL.
CASE_TIES = {
    "spine": [(0, "a", "m1", BASE + HOUR)],
    "user": [("a", BASE, None, 1, "Y"), ("a", BASE, None, 1, "y")],
    "pair": [],
    "profile": [("a", BASE, None, "Gold"), ("a", BASE, None, "gold")],
}


@pytest.mark.parametrize("as_of", ["event", "available"])
@SETTINGS
@example(**CASE_TIES)
@given(spine=spines, user=user_rows, pair=pair_rows, profile=profile_rows)
def test_postgres_matches_oracle(pg, as_of, spine, user, pair, profile):
    expected = oracle(spine, {"user_rows": user, "pair_rows": pair, "profile_rows": profile}, as_of)
    assert pg.run(as_of, "lateral", spine, user, pair, profile) == dict.fromkeys(VARIANTS, expected)


@pytest.mark.parametrize("as_of", ["event", "available"])
@SPARK_SETTINGS
@given(spine=spines, user=user_rows, pair=pair_rows, profile=profile_rows)
def test_spark_matches_oracle(spark, as_of, spine, user, pair, profile):
    expected = oracle(spine, {"user_rows": user, "pair_rows": pair, "profile_rows": profile}, as_of)
    assert spark.run(as_of, "asof", spine, user, pair, profile) == dict.fromkeys(VARIANTS, expected)


def test_spark_join_keeps_the_spine_types(spark, spark_session):
    """The training set's spine columns keep their own types: a zoned spine time stays TIMESTAMP_LTZ."""
    spark.load([], [], [], [])
    for variant, ts_type in (("naive", "timestamp_ntz"), ("zoned", "timestamp")):
        schema = spark_session.sql(spark.sql["event", "asof", variant]).schema
        assert schema["ts"].dataType.simpleString() == ts_type, variant


@SPARK_SETTINGS
@given(user=user_rows, pair=pair_rows, profile=profile_rows)
def test_spark_latest_rows_use_the_join_order(spark, user, pair, profile):
    """featsync.latest_rows on Spark (the default macro) picks the row the join would pick, zoned or not.
    The six views' latest rows come back from one query, each row as text (zoned values as
    their UTC wall clock), so an example costs one round of Spark jobs."""
    spark.load([], user, pair, profile)
    rows = {"user_rows": user, "pair_rows": pair, "profile_rows": profile}
    views = {
        **dict(zip(("fv_user", "fv_pair", "fv_profile"), VIEWS, strict=True)),
        **dict(zip(("fv_user_tz", "fv_pair_tz", "fv_profile_tz"), VIEWS, strict=True)),
    }
    selects = []
    for name, view in views.items():
        zoned_columns = ZONED[view.table] if name.endswith("_tz") else set()
        cells = [
            f"timestampadd(MICROSECOND, unix_micros({c}), timestamp_ntz'1970-01-01 00:00:00')" if i in zoned_columns else c
            for i, c in enumerate(view.columns)
        ]
        cells_sql = ", ".join(f"cast({c} as string)" for c in cells)
        selects.append(f"select '{name}' as view, array({cells_sql}) as cells from ({spark.sql['latest', name]}) as l")
    got: dict[str, Counter] = {name: Counter() for name in views}
    for name, cells in spark.execute(" union all ".join(selects), fetch=True):
        got[name][tuple(cells)] += 1
    for name, view in views.items():
        expected = latest_by_oracle(view, rows).values()
        assert got[name] == Counter(tuple(None if r[c] is None else str(r[c]) for c in view.columns) for r in expected), name


def latest_by_oracle(view: View, rows: dict[str, list[tuple]]) -> dict[tuple, dict]:
    """The best row per entity by the join's order (NULL keys and event times dropped)."""
    expected = {}
    for raw in rows[view.table]:
        r = dict(zip(view.columns, raw, strict=True))
        key = tuple(r[k] for k in view.keys)
        if None in key or r["event_timestamp"] is None:
            continue
        if key not in expected or order_key(view, r) > order_key(view, expected[key]):
            expected[key] = r
    return expected


@pytest.mark.parametrize("as_of", ["event", "available"])
@pytest.mark.parametrize("zoned", [False, True])
def test_snowflake_plan_is_valid_snowflake_sql(duck, as_of, zoned):
    """The Snowflake ASOF plan, rendered from the same plan, parses in sqlglot's Snowflake dialect;
    with zoned views and a zoned spine, times meet as TIMESTAMP_NTZ in UTC (Snowflake is not
    run here: no account)."""
    import sqlglot
    from sqlglot import exp

    suffix = "_tz" if zoned else ""
    inline = (
        "{% set plan = featsync._pit_plan(" + FEATURES.format(suffix) + ", none, {'merchant_id': 'shop_id'}, false) %}"
        "{% for view in plan %}{% do view.update({'spine_timestamp_type': '"
        + ("timestamp_tz" if zoned else "timestamp")
        + "'}) %}"
        "{% endfor %}{{ featsync.snowflake__point_in_time_join(source('pit_raw', 'spine'), plan, 'ts', '" + as_of + "', none) }}"
    )
    sql = duck.project.run_dbt(["compile", "--inline", inline]).result.results[0].node.compiled_code
    tree = sqlglot.parse_one(sql, read="snowflake")
    joins = [j for j in tree.find_all(exp.Join) if j.args.get("match_condition") is not None]
    assert len(joins) == 3  # one ASOF JOIN ... MATCH_CONDITION per feature view
    assert "ASOF JOIN" in tree.sql(dialect="snowflake")
    if zoned:  # compiled on DuckDB, so the time macros inside dispatch to DuckDB's: their Snowflake forms below
        assert "as featsync_spine_ts from" in sql and "featsync_spine.* exclude (featsync_spine_ts)" in sql
        parts = duck.project.run_dbt(
            ["compile", "--inline", "select {{ featsync.snowflake__utc('x', 'timestamp_ltz') }} as a, "
             "{{ featsync.snowflake__compare_time('x', 'timestamp_tz', '<=', 'y', 'timestamp_ntz') }} as b"]
        ).result.results[0].node.compiled_code  # fmt: skip
        assert "convert_timezone('UTC', x)::timestamp_ntz as a" in parts
        assert "convert_timezone('UTC', x)::timestamp_ntz <= y as b" in parts
        sqlglot.parse_one(parts, read="snowflake")


@SETTINGS
@given(user=user_rows, pair=pair_rows, profile=profile_rows)
def test_latest_rows_use_the_join_order(duck, user, pair, profile):
    """featsync.latest_rows (what push sends online) picks the row the join would pick, zoned or not."""
    duck.load([], user, pair, profile)
    rows = {"user_rows": user, "pair_rows": pair, "profile_rows": profile}
    for view, name in [
        *zip(VIEWS, ("fv_user", "fv_pair", "fv_profile"), strict=True),
        *zip(VIEWS, ("fv_user_tz", "fv_pair_tz", "fv_profile_tz"), strict=True),
    ]:
        expected = {}
        for raw in rows[view.table]:
            r = dict(zip(view.columns, raw, strict=True))
            key = tuple(r[k] for k in view.keys)
            if None in key or r["event_timestamp"] is None:
                continue
            if key not in expected or order_key(view, r) > order_key(view, expected[key]):
                expected[key] = r
        got = duck.execute(f"select {', '.join(view.columns)} from ({duck.sql['latest', name]}) as l", fetch=True)
        naive = [
            tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v for v in r) for r in got
        ]
        assert Counter(naive) == Counter(tuple(r[c] for c in view.columns) for r in expected.values())
