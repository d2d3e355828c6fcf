select
    transaction_id,
    user_id,
    merchant_id,
    {{ featsync.example_time('event_timestamp') }} as event_timestamp,
    cast(is_fraud as bigint) as is_fraud
from {{ featsync.example_raw('raw_fraud_labels') }}
