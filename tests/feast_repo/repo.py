"""A Feast repository mirroring the example's feature views and its fraud_detection service.

What a Feast user already has: their definitions stay as they are, and only feature_store.yaml
changes, to `online_store: {type: remote, path: http://<featsync serve>}`. The sources are
never read (featsync pushes Redis from dbt); Feast needs them to register the views. The
on-demand view is named after the service version that declares its features in featsync
(`fraud_detection_v2`), so `fraud_detection_v2:amount_vs_avg_ratio` means the same to both.
Runs in .venv-feast only (`make feast-venv`), never imported by featsync's own tests.
"""

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float64, Int64, String, UnixTimestamp

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)


def source(name: str) -> FileSource:
    return FileSource(name=name, path=f"data/{name}.parquet", timestamp_field="event_timestamp")


user_transaction_features = FeatureView(
    name="user_transaction_features",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        Field(name="transaction_count_7d", dtype=Int64),
        Field(name="transaction_count_30d", dtype=Int64),
        Field(name="amount_avg_30d", dtype=Float64),
        Field(name="amount_max_30d", dtype=Float64),
    ],
    source=source("user_transaction_features"),
)
merchant_risk_features = FeatureView(
    name="merchant_risk_features",
    entities=[merchant],
    ttl=timedelta(days=90),
    schema=[
        Field(name="chargeback_rate_30d", dtype=Float64),
        Field(name="refund_rate_30d", dtype=Float64),
        Field(name="avg_ticket_size_30d", dtype=Float64),
    ],
    source=source("merchant_risk_features"),
)
user_merchant_features = FeatureView(
    name="user_merchant_features",
    entities=[user, merchant],
    ttl=timedelta(days=90),
    schema=[Field(name="pair_transaction_count_90d", dtype=Int64), Field(name="pair_amount_sum_30d", dtype=Float64)],
    source=source("user_merchant_features"),
)
merchant_profile_features = FeatureView(
    name="merchant_profile_features",
    entities=[merchant],
    ttl=timedelta(0),
    schema=[Field(name="category", dtype=String), Field(name="risk_tier", dtype=String)],
    source=source("merchant_profile_features"),
)
transaction = RequestSource(
    name="transaction",
    schema=[Field(name="transaction_amount", dtype=Float64), Field(name="event_timestamp", dtype=UnixTimestamp)],
)


@on_demand_feature_view(
    name="fraud_detection_v2",
    sources=[user_transaction_features, transaction],
    schema=[Field(name="amount_vs_avg_ratio", dtype=Float64), Field(name="is_night_transaction", dtype=Bool)],
    mode="pandas",
)
def fraud_detection_v2(inputs: pd.DataFrame) -> pd.DataFrame:
    """Feast's own version of the service's on-demand features; featsync computes them server-side."""
    return pd.DataFrame(
        {
            "amount_vs_avg_ratio": inputs["transaction_amount"] / inputs["amount_avg_30d"],
            "is_night_transaction": pd.to_datetime(inputs["event_timestamp"]).dt.hour < 6,
        }
    )


fraud_detection = FeatureService(
    name="fraud_detection",
    features=[
        user_transaction_features,
        merchant_risk_features,
        user_merchant_features[["pair_transaction_count_90d"]],
        merchant_profile_features[["risk_tier"]],
        fraud_detection_v2,
    ],
)
