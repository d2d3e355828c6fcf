-- Point-in-time correct training set for fraud_detection v3 (the streaming example): v2's
-- features plus the user's last transaction as of each label, from the batch rows and the
-- push log. as_of='available' as v2 (a view without a created timestamp is available at its
-- event time).
-- depends_on: {{ ref('user_transaction_features') }}
-- depends_on: {{ ref('merchant_risk_features') }}
-- depends_on: {{ ref('user_merchant_features') }}
-- depends_on: {{ ref('merchant_profile_features') }}
-- depends_on: {{ ref('user_last_transaction') }}
{{ featsync.point_in_time_join(
    spine=ref('stg_fraud_labels'),
    feature_service='fraud_detection:v3',
    spine_timestamp='event_timestamp',
    as_of='available',
) }}
