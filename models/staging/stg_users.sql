select
    user_id,
    country,
    {{ featsync.example_time('signup_at') }} as signup_at
from {{ featsync.example_raw('raw_users') }}
