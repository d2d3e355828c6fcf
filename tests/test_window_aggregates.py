"""featsync.window_aggregates against a brute-force SQL oracle, on DuckDB and PostgreSQL.

The oracle recomputes every window of every row with a correlated subquery straight
from the raw transactions, so it shares no code with the macro.
"""

from __future__ import annotations

import pytest

# (feature view, entity keys, grain, column, aggregate SQL over the window's rows, window)
CASES = [
    ("user_transaction_features", ["user_id"], "event", "transaction_count_1d", "count(*)", "1 days"),
    ("user_transaction_features", ["user_id"], "event", "transaction_count_90d", "count(*)", "90 days"),
    ("user_transaction_features", ["user_id"], "event", "amount_sum_7d", "coalesce(sum(amount), 0)", "7 days"),
    ("user_transaction_features", ["user_id"], "event", "amount_avg_30d", "avg(amount)", "30 days"),
    ("user_transaction_features", ["user_id"], "event", "amount_max_7d", "max(amount)", "7 days"),
    ("user_transaction_features", ["user_id"], "event", "created_timestamp", "max(ingested_at)", "90 days"),
    ("user_merchant_features", ["user_id", "merchant_id"], "event", "pair_amount_sum_90d", "coalesce(sum(amount), 0)", "90 days"),
    ("merchant_risk_features", ["merchant_id"], "day", "merchant_transaction_count_30d", "count(*)", "30 days"),
    (
        "merchant_risk_features",
        ["merchant_id"],
        "day",
        "chargeback_rate_90d",
        "avg(case when status = 'chargeback' then 1.0 else 0.0 end)",
        "90 days",
    ),
    ("merchant_risk_features", ["merchant_id"], "day", "avg_ticket_size_30d", "avg(amount)", "30 days"),
    ("product_sales_features", ["product_id"], "day", "units_sold_1d", "count(*)", "1 days"),
    (
        "product_sales_features",
        ["product_id"],
        "day",
        "revenue_30d",
        "coalesce(sum(case when status = 'completed' then amount else 0 end), 0)",
        "30 days",
    ),
    (
        "product_sales_features",
        ["product_id"],
        "day",
        "product_refund_rate_30d",
        "avg(case when status <> 'completed' then 1.0 else 0.0 end)",
        "30 days",
    ),
]


def oracle_mismatches(view: str, keys: list[str], grain: str, column: str, agg: str, window: str) -> str:
    """SQL counting rows whose `column` differs from the brute-force value."""
    match = " and ".join(f"t.{k} = f.{k}" for k in keys)
    if grain == "event":  # [t - window, t], both ends inclusive
        span = f"t.created_at >= f.event_timestamp - interval '{window}' and t.created_at <= f.event_timestamp"
    else:  # whole days ending at the snapshot's stamp (end of day), exclusive
        span = f"t.created_at >= f.event_timestamp - interval '{window}' and t.created_at < f.event_timestamp"
    expected = f"(select {agg} from stg_transactions t where {match} and {span})"
    if column == "created_timestamp":
        differs = f"f.{column} is distinct from {expected}"
    else:
        differs = f"abs(coalesce(f.{column}, -1) - coalesce({expected}, -1)) > 1e-9"
    return f"select count(*), sum(case when {differs} then 1 else 0 end) from {view} f"


def daily_grid_complete(view: str, key: str) -> str:
    """SQL counting days where a 30d/90d daily snapshot value changes but no row was written."""
    return f"""
        with days as (
            select distinct {key}, cast(created_at as date) as d from stg_transactions
        ), expected as (
            select {key}, d + offs as d from days, (values (0), (30), (90)) as o(offs)
        )
        select count(*) from expected e
        where e.d <= (select max(cast(created_at as date)) from stg_transactions)
          and e.d + 1 not in (select cast(event_timestamp as date) from {view} f where f.{key} = e.{key})
    """


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[3]}" for c in CASES])
def test_duckdb_matches_oracle(duck_ro, case):
    rows, bad = duck_ro.execute(oracle_mismatches(*case)).fetchone()
    assert rows > 0
    assert bad == 0, f"{bad} of {rows} rows of {case[0]}.{case[3]} differ from the brute-force value"


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[3]}" for c in CASES])
def test_postgres_matches_oracle(pg_con, case):
    with pg_con.cursor() as cur:
        cur.execute(oracle_mismatches(*case))
        rows, bad = cur.fetchone()
    assert rows > 0
    assert bad == 0, f"{bad} of {rows} rows of {case[0]}.{case[3]} differ from the brute-force value"


def test_daily_snapshot_has_a_row_for_every_change(duck_ro):
    missing = duck_ro.execute(daily_grid_complete("merchant_risk_features", "merchant_id")).fetchone()[0]
    assert missing == 0


def test_engines_agree_row_for_row(duck_ro, pg_con):
    for view, keys, *_ in {c[0]: c for c in CASES}.values():
        order = ", ".join([*keys, "event_timestamp"])
        duck = duck_ro.execute(f"select * from {view} order by {order}").fetchall()
        with pg_con.cursor() as cur:
            cur.execute(f"select * from {view} order by {order}")
            pg = cur.fetchall()
        assert len(duck) == len(pg), view
        for d, p in zip(duck, pg, strict=True):
            assert _same(d, p), (view, d, p)


def _same(a: tuple, b: tuple) -> bool:
    return all(x == y or (isinstance(x, float) and abs(x - y) <= 1e-9 * max(1.0, abs(x))) for x, y in zip(a, b, strict=True))
