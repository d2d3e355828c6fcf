-- Point-in-time correct training set for fraud_detection v1, one row per labelled transaction.
-- depends_on: {{ ref('user_transaction_features') }}
-- depends_on: {{ ref('merchant_risk_features') }}
{{ featsync.point_in_time_join(
    spine=ref('stg_fraud_labels'),
    feature_service='fraud_detection:v1',
    spine_timestamp='event_timestamp',
) }}
