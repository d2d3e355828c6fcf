{{ config(enabled=var('featsync_streaming_example', false)) }}
-- Point-in-time correct training set for fraud_detection v3 (the streaming example): the
-- user's last transaction as of each label, from the batch rows and the push log.
-- depends_on: {{ ref('user_transaction_features') }}
-- depends_on: {{ ref('merchant_risk_features') }}
-- depends_on: {{ ref('user_last_transaction') }}
{{ featsync.point_in_time_join(
    spine=ref('stg_fraud_labels'),
    feature_service='fraud_detection:v3',
    spine_timestamp='event_timestamp',
) }}
