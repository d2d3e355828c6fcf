select
    product_id,
    merchant_id,
    cast(price as {{ featsync.sql_type('float8') }}) as price,
    {{ featsync.example_time('updated_at') }} as updated_at
from {{ featsync.example_raw('raw_products') }}
