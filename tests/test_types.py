"""The one table of column types, the identifier rule, and the macros agreeing with both."""

from __future__ import annotations

import json

import duckdb
import pytest

from featsync.errors import DbtError
from featsync.registry.identifiers import RESERVED, identifier_problem
from featsync.registry.types import BOOL, DATE, DECIMAL, FLOAT, INT, OTHER, TEXT, TIMESTAMP, column_type

TYPES = [
    # (declared, dialect, kind, zoned)
    ("text", "postgres", TEXT, False),
    ("varchar", "duckdb", TEXT, False),
    ("character varying(20)", "postgres", TEXT, False),
    ("char(3)", "postgres", TEXT, False),
    ("bpchar", "postgres", TEXT, False),
    ("string", "snowflake", TEXT, False),
    ("bigint", "duckdb", INT, False),
    ("int4", "postgres", INT, False),
    ("hugeint", "duckdb", INT, False),
    ("number", "snowflake", INT, False),  # NUMBER(38, 0)
    ("NUMBER(18,0)", "snowflake", INT, False),
    ("numeric(10,0)", "postgres", INT, False),
    ("numeric(12,2)", "postgres", DECIMAL, False),
    ("numeric", "postgres", DECIMAL, False),  # unconstrained: not an integer
    ("decimal", "duckdb", DECIMAL, False),  # DuckDB's DECIMAL(18, 3)
    ("NUMBER(10,2)", "snowflake", DECIMAL, False),
    ("float8", "postgres", FLOAT, False),
    ("double precision", "postgres", FLOAT, False),
    ("real", "duckdb", FLOAT, False),
    ("float", "snowflake", FLOAT, False),
    ("boolean", "duckdb", BOOL, False),
    ("interval", "duckdb", OTHER, False),  # not an integer because it starts with "int"
    ("interval", "postgres", OTHER, False),
    ("date", "postgres", DATE, False),
    ("json", "duckdb", OTHER, False),
    ("timestamp", "duckdb", TIMESTAMP, False),
    ("timestamp_s", "duckdb", TIMESTAMP, False),
    ("timestamp_ms", "duckdb", TIMESTAMP, False),
    ("timestamp_ns", "duckdb", TIMESTAMP, False),
    ("datetime", "snowflake", TIMESTAMP, False),
    ("timestamp_ntz", "snowflake", TIMESTAMP, False),
    ("timestamp without time zone", "postgres", TIMESTAMP, False),
    ("timestamp(3)", "postgres", TIMESTAMP, False),
    ("timestamptz", "postgres", TIMESTAMP, True),
    ("timestamp with time zone", "duckdb", TIMESTAMP, True),
    ("timestamp(3) with time zone", "postgres", TIMESTAMP, True),
    ("timestamp_tz", "snowflake", TIMESTAMP, True),
    ("timestamp_ltz", "snowflake", TIMESTAMP, True),
    ("timestamp_tz(9)", "snowflake", TIMESTAMP, True),
    ("timestamp", "spark", TIMESTAMP, False),  # the spark target sets spark.sql.timestampType=TIMESTAMP_NTZ
    ("timestamp_ntz", "spark", TIMESTAMP, False),
    ("timestamp_ltz", "spark", TIMESTAMP, True),
    ("timestamp", "databricks", TIMESTAMP, False),
    ("timestamp_ltz", "databricks", TIMESTAMP, True),
]


@pytest.mark.parametrize("declared, dialect, kind, zoned", TYPES)
def test_type_table(declared, dialect, kind, zoned):
    parsed = column_type(declared, dialect)
    assert (parsed.kind, parsed.zoned) == (kind, zoned)


def test_online_problems_name_the_cast():
    assert column_type("bigint").online_problem is None
    assert "cast(x as double precision)" in column_type("numeric(12,2)", "postgres").online_problem
    assert "cast it to a timestamp" in column_type("date").online_problem
    assert "cannot be stored online" in column_type("interval").online_problem


NAMES_OK = ["user_id", "_x", "a1", "label", "event_timestamp", "x" * 63]
NAMES_BAD = ['label"; drop table t; --', "Amount", "1st", "a-b", "a b", "", "x" * 64, "select", "user", "order", "é"]


@pytest.mark.parametrize("name", NAMES_OK)
def test_plain_names_pass(name):
    assert identifier_problem(name) is None


@pytest.mark.parametrize("name", NAMES_BAD)
def test_unsafe_names_are_refused(name):
    assert identifier_problem(name)


def test_reserved_words_cover_duckdb_and_postgres(pg_dsn):
    """The word list holds every reserved word of the engines featsync runs on here."""
    import psycopg2

    duck = {
        r[0]
        for r in duckdb.sql(
            "select keyword_name from duckdb_keywords() where keyword_category in ('reserved', 'type_function')"
        ).fetchall()
    }
    with psycopg2.connect(**pg_dsn) as con, con.cursor() as cur:
        cur.execute("select word from pg_get_keywords() where catcode in ('R', 'T')")
        postgres = {r[0] for r in cur.fetchall()}
    assert duck - RESERVED == set() and postgres - RESERVED == set()


# -- the macros read types and names by the same rules ------------------------------------


def compile_inline(project, jinja: str) -> str:
    """Compiled by tests/types_project, which installs featsync as a package (its own DuckDB file)."""
    return project.run_dbt(["compile", "--inline", jinja]).result.results[0].node.compiled_code


def test_macros_tell_zoned_types_like_python(types_duckdb):
    timestamps = [declared for declared, _, kind, _ in TYPES if kind == TIMESTAMP]
    calls = ", ".join(f"featsync.is_zoned({t!r})" for t in timestamps)
    compiled = compile_inline(types_duckdb, f"select '{{{{ [{calls}] | tojson }}}}'")
    assert json.loads(compiled.split("'")[1]) == [zoned for _, _, kind, zoned in TYPES if kind == TIMESTAMP]


def test_macros_use_the_same_names_rule(types_duckdb):
    compiled = compile_inline(types_duckdb, "select '{{ featsync._reserved_words() | tojson }}'")
    assert set(json.loads(compiled.split("'")[1])) == RESERVED
    ok = ", ".join(f"featsync._check_identifier({n!r}, 'x')" for n in NAMES_OK)
    assert json.loads(compile_inline(types_duckdb, f"select '{{{{ [{ok}] | tojson }}}}'").split("'")[1]) == NAMES_OK
    for name in ['label"; drop table t; --', "Amount", "select", "x" * 64, "featsync_asof"]:
        jinja = "select {{ featsync._check_identifier(" + json.dumps(name) + ", 'column') }}"
        with pytest.raises(
            DbtError, match="is not a plain SQL name|is a reserved SQL word|reserves for the columns its SQL adds"
        ):
            compile_inline(types_duckdb, jinja)
