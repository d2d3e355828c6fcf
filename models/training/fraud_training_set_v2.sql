-- Point-in-time correct training set for fraud_detection v2. as_of='available': a value
-- is used only once it had landed in the warehouse (created_timestamp <= label time).
-- depends_on: {{ ref('user_transaction_features') }}
-- depends_on: {{ ref('merchant_risk_features') }}
-- depends_on: {{ ref('user_merchant_features') }}
-- depends_on: {{ ref('merchant_profile_features') }}
{{ featsync.point_in_time_join(
    spine=ref('stg_fraud_labels'),
    feature_service='fraud_detection:v2',
    spine_timestamp='event_timestamp',
    as_of='available',
) }}
