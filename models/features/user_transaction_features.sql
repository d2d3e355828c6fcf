{{ featsync.window_aggregates(
    relation=ref('stg_transactions'),
    entities=['user_id'],
    timestamp='created_at',
    created_timestamp='ingested_at',
    grain='event',
    aggregates=[
        {'name': 'transaction_count', 'agg': 'count', 'windows': ['1d', '7d', '30d', '90d']},
        {'name': 'amount_sum', 'agg': 'sum', 'expr': 'amount'},
        {'name': 'amount_avg', 'agg': 'avg', 'expr': 'amount'},
        {'name': 'amount_max', 'agg': 'max', 'expr': 'amount'},
    ],
    windows=['7d', '30d'],
) }}
