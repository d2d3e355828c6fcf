"""Deterministic generator for the example payments-fraud data.

The same ``seed`` and ``scale`` always give byte-identical files, so the demo,
the tests and the benchmarks all see the same data. Scale 1 is small enough to
check in as dbt seeds (``seeds/raw_*.csv``); larger scales are written as
parquet and read by dbt through sources with an ``external_location``.

All timestamps are naive values meaning UTC (see docs/time-and-types.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

START = np.datetime64("2024-01-01T00:00:00", "us")
DAYS = 120
MERCHANT_CATEGORIES = ("grocery", "electronics", "travel", "gaming", "fashion")
RISK_TIERS = ("low", "medium", "high")
STATUSES = ("completed", "refunded", "chargeback")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN")
TABLES = ("raw_users", "raw_merchants", "raw_products", "raw_transactions", "raw_fraud_labels")


@dataclass(frozen=True)
class Sizes:
    """Row counts for one scale. Scale 1 is the checked-in demo."""

    users: int
    merchants: int
    products: int
    transactions: int

    @classmethod
    def for_scale(cls, scale: int) -> Sizes:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        return cls(users=200 * scale, merchants=40 * scale, products=120 * scale, transactions=4000 * scale)


def _ids(prefix: str, n: int) -> pa.Array:
    width = max(4, len(str(n)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], pa.string())


def _ts(micros_from_start: np.ndarray) -> pa.Array:
    values = START + micros_from_start.astype("timedelta64[us]")
    return pa.array(values, pa.timestamp("us"))


def generate(scale: int = 1, seed: int = 7) -> dict[str, pa.Table]:
    """Build every raw table as an Arrow table (vectorised, so large scales stay fast)."""
    sizes = Sizes.for_scale(scale)
    rng = np.random.default_rng(seed)
    day_us = 86_400_000_000
    span_us = DAYS * day_us

    user_ids = _ids("u", sizes.users)
    users = pa.table(
        {
            "user_id": user_ids,
            "country": pa.array(rng.choice(COUNTRIES, sizes.users)),
            "signup_at": _ts(rng.integers(-365 * day_us, 0, sizes.users)),
        }
    )
    # A few users are fraudsters: they charge back far more often.
    fraudster = rng.random(sizes.users) < 0.05

    merchant_ids = _ids("m", sizes.merchants)
    merchant_risk = rng.choice(len(RISK_TIERS), sizes.merchants, p=[0.6, 0.3, 0.1])
    merchants = pa.table(
        {
            "merchant_id": merchant_ids,
            "category": pa.array(rng.choice(MERCHANT_CATEGORIES, sizes.merchants)),
            "risk_tier": pa.array(np.array(RISK_TIERS)[merchant_risk]),
            # updated_at drives the SCD2 snapshot (timestamp strategy).
            "updated_at": _ts(rng.integers(0, span_us, sizes.merchants)),
        }
    )

    product_ids = _ids("p", sizes.products)
    product_merchant = rng.integers(0, sizes.merchants, sizes.products)
    products = pa.table(
        {
            "product_id": product_ids,
            "merchant_id": merchant_ids.take(pa.array(product_merchant)),
            "price": pa.array(np.round(rng.lognormal(3.5, 1.0, sizes.products), 2)),
            "updated_at": _ts(rng.integers(0, span_us, sizes.products)),
        }
    )

    n = sizes.transactions
    t_user = rng.integers(0, sizes.users, n)
    t_product = rng.integers(0, sizes.products, n)
    t_merchant = product_merchant[t_product]
    created_us = np.sort(rng.integers(0, span_us, n))
    # Whole seconds keep CSV round trips exact on every engine.
    created_us -= created_us % 1_000_000
    amount = np.round(products["price"].to_numpy()[t_product] * rng.uniform(0.8, 1.2, n), 2)
    chargeback_p = np.where(fraudster[t_user], 0.35, 0.01) + 0.03 * merchant_risk[t_merchant]
    u = rng.random(n)
    status_idx = np.where(u < chargeback_p, 2, np.where(u < chargeback_p + 0.05, 1, 0))
    # Rows land in the warehouse minutes later; about 5% are backfilled days later.
    lag_us = rng.integers(60, 1800, n) * 1_000_000
    backfilled = rng.random(n) < 0.05
    lag_us = np.where(backfilled, rng.integers(1, 10, n) * day_us, lag_us)
    transaction_ids = _ids("t", n)
    transactions = pa.table(
        {
            "transaction_id": transaction_ids,
            "user_id": user_ids.take(pa.array(t_user)),
            "merchant_id": merchant_ids.take(pa.array(t_merchant)),
            "product_id": product_ids.take(pa.array(t_product)),
            "amount": pa.array(amount),
            "status": pa.array(np.array(STATUSES)[status_idx]),
            "created_at": _ts(created_us),
            "ingested_at": _ts(created_us + lag_us),
        }
    )

    # Labels arrive for transactions in the second half of the period: the
    # spine of the training sets. Fraud correlates with chargebacks and amount.
    labelled = np.flatnonzero(created_us >= span_us // 2)
    fraud_p = np.where(status_idx[labelled] == 2, 0.7, 0.01) + np.where(fraudster[t_user[labelled]], 0.2, 0.0)
    labels = pa.table(
        {
            "transaction_id": transaction_ids.take(pa.array(labelled)),
            "user_id": user_ids.take(pa.array(t_user[labelled])),
            "merchant_id": merchant_ids.take(pa.array(t_merchant[labelled])),
            "event_timestamp": _ts(created_us[labelled]),
            "is_fraud": pa.array((rng.random(len(labelled)) < fraud_p).astype(np.int64)),
        }
    )
    return dict(zip(TABLES, (users, merchants, products, transactions, labels), strict=True))


def write(out_dir: Path, scale: int = 1, seed: int = 7, fmt: str = "csv") -> list[Path]:
    """Write every raw table to ``out_dir`` as CSV (dbt seeds) or parquet (dbt sources)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in generate(scale, seed).items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "csv":
            _write_csv(table, path)
        elif fmt == "parquet":
            pq.write_table(table, path)
        else:
            raise ValueError(f"unknown format {fmt!r}: use csv or parquet")
        written.append(path)
    return written


def _write_csv(table: pa.Table, path: Path) -> None:
    # ISO timestamps without a zone suffix: the warehouse stores naive UTC.
    columns = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = pa.array(
                [None if v is None else v.strftime("%Y-%m-%d %H:%M:%S") for v in column.to_pylist()],
                pa.string(),
            )
        columns[field.name] = column
    pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(quoting_style="needed"))
