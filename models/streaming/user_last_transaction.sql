-- The streaming counterpart of the fraud example (docs/push-api.md): each user's last
-- transaction amount and merchant. The batch rows come from stg_transactions; the push log
-- holds what a stream processor wrote with POST /push (to=online_and_offline) between
-- builds, served online at once and read here, so training sees exactly what was served.
-- One row per user and event time, the one the online store kept (docs/push-api.md, "Equal
-- event times"): a logged row before a batch row; among logged rows the later push
-- (featsync_pushed_at: online, the later write of an equal event time wins); within one push,
-- and among batch rows, the point-in-time order's (the greatest amount, then merchant, NULL
-- lowest, text bytewise).
select user_id, event_timestamp, last_amount, last_merchant_id
from (
    select
        *,
        row_number() over (
            partition by user_id, event_timestamp
            order by from_log desc, pushed_at desc nulls last, last_amount desc nulls last,
                {{ featsync.bytewise('last_merchant_id', 'text') }} desc nulls last
        ) as featsync_pick
    from (
        select
            user_id,
            created_at as event_timestamp,
            amount as last_amount,
            merchant_id as last_merchant_id,
            0 as from_log,
            cast(null as {{ featsync.sql_type('timestamp') }}) as pushed_at
        from {{ ref('stg_transactions') }}
        union all
        select user_id, event_timestamp, last_amount, last_merchant_id, 1 as from_log, featsync_pushed_at as pushed_at
        from (
            {{ featsync.push_log('user_last_transaction', {
                'user_id': 'text', 'event_timestamp': 'timestamp', 'last_amount': 'float8', 'last_merchant_id': 'text',
                'featsync_pushed_at': 'timestamp'}) }}
        ) as pushed
    ) as unioned
) as deduplicated
where featsync_pick = 1
