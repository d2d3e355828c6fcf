select
    transaction_id,
    user_id,
    merchant_id,
    cast(event_timestamp as timestamp) as event_timestamp,
    cast(is_fraud as bigint) as is_fraud
from {{ featsync.example_raw('raw_fraud_labels') }}
