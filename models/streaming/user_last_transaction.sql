-- The streaming counterpart of the fraud example (docs/push-api.md): each user's last
-- transaction amount and merchant. The batch rows come from stg_transactions; the push log
-- holds what a stream processor wrote with POST /push (to=online_and_offline) between
-- builds, served online at once and read here, so training sees exactly what was served.
-- One row per user and event time, the logged one first.
select user_id, event_timestamp, last_amount, last_merchant_id
from (
    select
        *,
        row_number() over (partition by user_id, event_timestamp order by from_log desc, last_merchant_id) as featsync_pick
    from (
        select
            user_id,
            created_at as event_timestamp,
            amount as last_amount,
            merchant_id as last_merchant_id,
            0 as from_log
        from {{ ref('stg_transactions') }}
        union all
        select user_id, event_timestamp, last_amount, last_merchant_id, 1 as from_log
        from (
            {{ featsync.push_log('user_last_transaction', {
                'user_id': 'text', 'event_timestamp': 'timestamp', 'last_amount': 'float8', 'last_merchant_id': 'text'}) }}
        ) as pushed
    ) as unioned
) as deduplicated
where featsync_pick = 1
