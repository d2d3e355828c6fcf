select
    user_id,
    country,
    cast(signup_at as timestamp) as signup_at
from {{ featsync.example_raw('raw_users') }}
