"""On-demand features: the training-serving-skew guarantee and the load-time rejections.

Parity: random expressions from the supported grammar, over random rows (NULLs, zeros,
negatives, large values, boundary hours), compiled once and evaluated three ways: the
DuckDB SQL by DuckDB, the Postgres SQL by Postgres, and the Python evaluator; and, with
fewer examples (each is a Spark job), the Spark SQL by Spark against the same evaluator.
Every value must be identical, type included.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featsync.ondemand.compiler import PLACEHOLDER, ExpressionError, compile_feature

COLUMNS = {
    "a": "float",
    "b": "float",
    "n": "int",
    "m": "int",
    "p": "bool",
    "q": "bool",
    "s": "text",
    "ts": "timestamp",
    "tt": "timestamp",
}
SQL_TYPES = {"float": "double precision", "int": "bigint", "bool": "boolean", "text": "text", "timestamp": "timestamp"}
NAMES = list(COLUMNS)


# -- random inputs --------------------------------------------------------------------------

floats = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 1e15, -1e15, 9.2e18, 1e-6]),
    # |x| within [1e-6, 1e15] or 0: nested products stay far from double overflow (see docs/on-demand.md).
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False).map(lambda x: 0.0 if abs(x) < 1e-6 else x),
)
ints = st.one_of(
    st.none(),
    st.sampled_from([0, 1, -1, 2**53 + 1, 2**62, -(2**62), 6]),
    st.integers(min_value=-(2**62), max_value=2**62),
)
timestamps = st.one_of(
    st.none(),
    st.sampled_from([datetime(2024, 3, 1, 5, 59, 59, 999999), datetime(2024, 3, 1, 6), datetime(2024, 12, 31, 23, 59, 59)]),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "a": floats,
            "b": floats,
            "n": ints,
            "m": ints,
            "p": st.one_of(st.none(), st.booleans()),
            "q": st.one_of(st.none(), st.booleans()),
            "s": st.sampled_from([None, "x", "y", "", "X"]),
            "ts": timestamps,
            "tt": timestamps,
        }
    ),
    min_size=1,
    max_size=15,
)

# -- random expressions from the supported grammar ------------------------------------------

PARTS = ["year", "quarter", "month", "week", "day", "doy", "dow", "isodow", "hour", "minute", "second"]


def numeric(depth: int) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(["a", "b", "n", "m", "0", "1", "-3", "2.5", "0.1", "1e9", "null"]),
        st.sampled_from(PARTS).flatmap(
            lambda part: st.sampled_from([f"extract({part} from ts)", f"date_part('{part}', tt)", f"extract({part} from null)"])
        ),
    )
    if depth == 0:
        return leaves
    sub, cond = numeric(depth - 1), boolean(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"-({x})"),
        st.tuples(cond, sub, sub).map(lambda t: f"case when {t[0]} then {t[1]} else {t[2]} end"),
        st.tuples(cond, sub).map(lambda t: f"case when {t[0]} then {t[1]} end"),
        st.tuples(sub, sub).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
        sub.map(lambda x: f"cast({x} as bigint)"),
        sub.map(lambda x: f"cast({x} as double)"),
        cond.map(lambda x: f"cast({x} as bigint)"),
    )


def boolean(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(
        ["p", "q", "true", "false", "s = 'x'", "s <> ''", "ts < tt", "ts = tt", "a is null", "n is not null"]
    )
    if depth == 0:
        return leaves
    sub, num = boolean(depth - 1), numeric(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(num, st.sampled_from(["=", "<>", "<", "<=", ">", ">="]), num).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(sub, st.sampled_from(["and", "or"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda x: f"not ({x})"),
        st.tuples(sub, sub, sub).map(lambda t: f"case when {t[0]} then {t[1]} else {t[2]} end"),
        st.tuples(sub, sub).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
        st.tuples(num, num).map(lambda t: f"(({t[0]}) / ({t[1]}) > 1)"),
        st.tuples(sub, num).map(lambda t: f"(case when {t[0]} then null end) = {t[1]}"),
        st.tuples(sub, sub).map(lambda t: f"coalesce(case when {t[0]} then null end, {t[1]})"),
    )


features = st.one_of(
    st.tuples(numeric(3), st.sampled_from(["float8", "bigint"])),
    st.tuples(boolean(3), st.just("boolean")),
)


# -- three evaluations of one compiled feature ----------------------------------------------


@pytest.fixture(scope="module")
def engines(pg_dsn):
    import psycopg2

    duck = duckdb.connect()
    duck.execute("set TimeZone = 'UTC'")
    pg = psycopg2.connect(**pg_dsn)
    pg.autocommit = True
    columns = ", ".join(f"{name} {SQL_TYPES[kind]}" for name, kind in COLUMNS.items())
    duck.execute(f"create table inputs (id bigint, {columns})")
    with pg.cursor() as cur:
        cur.execute(f"create temp table inputs (id bigint, {columns})")  # session-private, dropped on close
    yield duck, pg
    duck.close()
    pg.close()


def evaluate_everywhere(engines, expression: str, data_type: str, data: list[dict]) -> dict[str, list]:
    duck, pg = engines
    feature = compile_feature("f", expression, data_type, COLUMNS)
    params = [(i, *(row[name] for name in NAMES)) for i, row in enumerate(data)]
    insert = f"insert into inputs values ({', '.join(['%s'] * (len(NAMES) + 1))})"
    duck.execute("delete from inputs")
    duck.executemany(insert.replace("%s", "?"), params)
    with pg.cursor() as cur:
        cur.execute("truncate inputs")
        cur.executemany(insert, params)

    def query(dialect: str) -> str:
        sql = feature.sql[dialect]
        for name in feature.inputs:
            sql = sql.replace(f'"{PLACEHOLDER}{name}"', f"inputs.{name}")
        return f"select {sql} from inputs order by id"

    with pg.cursor() as cur:
        cur.execute(query("postgres"))
        from_postgres = [r[0] for r in cur.fetchall()]
    from_duckdb = [r[0] for r in duck.execute(query("duckdb")).fetchall()]
    online = [
        feature.evaluate({k: (v.replace(tzinfo=UTC) if isinstance(v, datetime) else v) for k, v in row.items()}) for row in data
    ]
    return {"duckdb": from_duckdb, "postgres": from_postgres, "python": online}


def assert_identical(results: dict[str, list], data_type: str) -> None:
    expected_type = {"float8": float, "bigint": int, "boolean": bool}[data_type]
    python = results["python"]
    for engine in [e for e in results if e != "python"]:
        got = results[engine]
        assert len(got) == len(python)
        for i, (value, want) in enumerate(zip(got, python, strict=True)):
            assert value == want or (value is None and want is None), f"row {i}: {engine} {value!r} != python {want!r}"
            if want is not None:
                assert type(value) is expected_type and type(want) is expected_type, (engine, value, want)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(feature=features, data=rows)
def test_warehouse_and_online_agree_on_random_expressions(engines, feature, data):
    expression, data_type = feature
    assert_identical(evaluate_everywhere(engines, expression, data_type, data), data_type)


SPARK_TYPES = {"float": "double", "int": "bigint", "bool": "boolean", "text": "string", "timestamp": "timestamp_ntz"}


def evaluate_on_spark(spark, expression: str, data_type: str, data: list[dict]) -> dict[str, list]:
    """The Spark SQL of the feature over the rows (a temporary view), beside the Python evaluator."""
    feature = compile_feature("f", expression, data_type, COLUMNS)
    schema = ", ".join(["id bigint", *(f"{name} {SPARK_TYPES[kind]}" for name, kind in COLUMNS.items())])
    spark.createDataFrame([(i, *(row[name] for name in NAMES)) for i, row in enumerate(data)], schema).createOrReplaceTempView(
        "featsync_ondemand_inputs"
    )
    sql = feature.sql["spark"]
    for name in feature.inputs:
        sql = sql.replace(f"`{PLACEHOLDER}{name}`", f"featsync_ondemand_inputs.{name}")
    from_spark = [r[0] for r in spark.sql(f"select {sql} from featsync_ondemand_inputs order by id").collect()]
    online = [
        feature.evaluate({k: (v.replace(tzinfo=UTC) if isinstance(v, datetime) else v) for k, v in row.items()}) for row in data
    ]
    return {"spark": from_spark, "python": online}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(feature=features, data=rows)
def test_spark_and_online_agree_on_random_expressions(spark_session, feature, data):
    expression, data_type = feature
    assert_identical(evaluate_on_spark(spark_session, expression, data_type, data), data_type)


EDGE_ROWS = [
    {
        "a": 500.0,
        "b": 0.0,
        "n": 0,
        "m": 2**62,
        "p": None,
        "q": True,
        "s": "x",
        "ts": datetime(2024, 3, 1, 5, 59, 59, 999999),
        "tt": None,
    },
    {
        "a": 2.5,
        "b": -0.0,
        "n": 7,
        "m": 2**62,
        "p": False,
        "q": None,
        "s": None,
        "ts": datetime(2024, 3, 1, 6),
        "tt": datetime(2024, 3, 3),
    },
    {
        "a": -2.5,
        "b": None,
        "n": None,
        "m": -1,
        "p": True,
        "q": False,
        "s": "",
        "ts": None,
        "tt": datetime(2024, 3, 2, 23, 59, 59),
    },
    {"a": 9.3e18, "b": 3.0, "n": -(2**62), "m": -(2**62), "p": None, "q": None, "s": "X", "ts": datetime(1970, 1, 1), "tt": None},
]


@pytest.mark.parametrize(
    ("expression", "data_type", "expected"),
    [
        # the lecture's features: division by zero (also -0.0) and NULL give NULL
        ("a / b", "float8", [None, None, None, 3.1e18]),
        ("extract(hour from ts) < 6", "boolean", [True, False, None, True]),
        # '/' is float division even for integers; integer sums cannot overflow (double)
        ("n / 2", "float8", [0.0, 3.5, None, -(2.0**61)]),
        ("m + m", "float8", [2.0**63, 2.0**63, -2.0, -(2.0**63)]),
        # double -> bigint rounds half to even; outside int64 it is NULL
        ("cast(a as bigint)", "bigint", [500, 2, -2, None]),
        ("a", "bigint", [500, 2, -2, None]),
        # three-valued logic and CASE on NULL conditions
        ("p or q", "boolean", [True, None, True, None]),
        ("p and q", "boolean", [None, False, False, None]),
        ("case when p then 1 else 0 end", "bigint", [0, 0, 1, 0]),
        ("coalesce(b, n, -1)", "float8", [0.0, -0.0, -1.0, 3.0]),
        ("extract(second from tt) + extract(dow from tt)", "bigint", [None, 0 + 0, 59 + 6, None]),
        ("s = 'x'", "boolean", [True, None, False, False]),
        # always-NULL sub-expressions (Postgres would type a bare CASE of NULLs as text)
        ("cast(case when p then a else case when p then null end end as double)", "float8", [None, None, -2.5, None]),
        ("coalesce(case when p then null end, extract(hour from null), n)", "bigint", [0, 7, None, -(2**62)]),
    ],
)
def test_pinned_semantics(engines, expression, data_type, expected):
    results = evaluate_everywhere(engines, expression, data_type, EDGE_ROWS)
    assert results["python"] == expected
    assert_identical(results, data_type)


@pytest.mark.parametrize(
    ("expression", "data_type"),
    [
        # Spark's cast truncates (1.5 -> 1, 500.7 -> 500): BROUND keeps half to even (2, 501)
        ("cast(a * 0.6 as bigint)", "bigint"),
        ("a + 0.7", "bigint"),
        ("extract(dow from tt) * 10 + extract(isodow from tt)", "bigint"),  # Spark's DAYOFWEEK starts at 1
        ("extract(second from ts) + extract(week from ts) + extract(doy from tt)", "bigint"),
        ("a / b", "float8"),
        ("coalesce(case when p then null end, extract(hour from null), n)", "bigint"),
    ],
)
def test_pinned_semantics_on_spark(spark_session, expression, data_type):
    assert_identical(evaluate_on_spark(spark_session, expression, data_type, EDGE_ROWS), data_type)


# -- rejected at load ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "data_type", "message"),
    [
        ("nope / a", "float8", "unknown name 'nope'"),
        ("t.a + 1", "float8", "bare name"),
        ("upper(s) = 'X'", "boolean", "function UPPER(s) is not supported"),
        ("a % 2", "float8", "is not supported"),
        ("sum(a)", "float8", "aggregate"),
        ("(select 1)", "float8", "subqueries"),
        ("a +", "float8", "not valid SQL"),
        ("", "float8", "non-empty"),
        ("s < 'x'", "boolean", "text compares only with = and <>"),
        ("a and p", "boolean", "AND needs booleans"),
        ("s + 1", "float8", "needs numbers"),
        ("ts < 3", "boolean", "compares timestamp with int"),
        ("case when p then 1 else 'x' end", "float8", "mixes"),
        ("case n when 1 then 2 end", "float8", "simple CASE"),
        ("cast(s as bigint)", "bigint", "cannot cast text"),
        ("cast(a as text)", "float8", "casts go to bigint, double"),
        ("cast(a as boolean)", "boolean", "comparison"),
        ("extract(epoch from ts)", "bigint", "date part 'epoch'"),
        ("extract(hour from a)", "bigint", "needs a timestamp"),
        ("p", "float8", "cast it explicitly"),
        ("a", "boolean", "declared boolean"),
        ("a", "text", "data_type 'text' is not supported"),
        ("99999999999999999999", "bigint", "outside bigint's range"),
    ],
)
def test_unsupported_expressions_are_rejected_at_compile_time(expression, data_type, message):
    with pytest.raises(ExpressionError, match=None) as info:
        compile_feature("f", expression, data_type, COLUMNS)
    assert message in str(info.value)
