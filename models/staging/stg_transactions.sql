select
    transaction_id,
    user_id,
    merchant_id,
    product_id,
    cast(amount as float8) as amount,
    status,
    cast(created_at as timestamp) as created_at,
    cast(ingested_at as timestamp) as ingested_at
from {{ featsync.example_raw('raw_transactions') }}
