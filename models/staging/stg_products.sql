select
    product_id,
    merchant_id,
    cast(price as float8) as price,
    cast(updated_at as timestamp) as updated_at
from {{ featsync.example_raw('raw_products') }}
