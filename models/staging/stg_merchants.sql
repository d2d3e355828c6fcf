select
    merchant_id,
    category,
    risk_tier,
    cast(updated_at as timestamp) as updated_at
from {{ featsync.example_raw('raw_merchants') }}
