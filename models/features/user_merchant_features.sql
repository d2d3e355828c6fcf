{{ featsync.window_aggregates(
    relation=ref('stg_transactions'),
    entities=['user_id', 'merchant_id'],
    timestamp='created_at',
    grain='event',
    aggregates=[
        {'name': 'pair_transaction_count', 'agg': 'count'},
        {'name': 'pair_amount_sum', 'agg': 'sum', 'expr': 'amount'},
    ],
    windows=['30d', '90d'],
) }}
