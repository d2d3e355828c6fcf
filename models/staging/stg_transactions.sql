select
    transaction_id,
    user_id,
    merchant_id,
    product_id,
    cast(amount as {{ featsync.sql_type('float8') }}) as amount,
    status,
    {{ featsync.example_time('created_at') }} as created_at,
    {{ featsync.example_time('ingested_at') }} as ingested_at
from {{ featsync.example_raw('raw_transactions') }}
