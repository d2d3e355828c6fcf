select
    merchant_id,
    category,
    risk_tier,
    {{ featsync.example_time('updated_at') }} as updated_at
from {{ featsync.example_raw('raw_merchants') }}
