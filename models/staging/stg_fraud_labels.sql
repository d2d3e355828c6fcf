select
    labels.transaction_id,
    labels.user_id,
    labels.merchant_id,
    {{ featsync.example_time('labels.event_timestamp') }} as event_timestamp,
    cast(labels.is_fraud as bigint) as is_fraud,
    transactions.amount as transaction_amount
from {{ featsync.example_raw('raw_fraud_labels') }} as labels
left join {{ ref('stg_transactions') }} as transactions
    on transactions.transaction_id = labels.transaction_id
