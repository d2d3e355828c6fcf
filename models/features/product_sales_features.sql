{{ featsync.window_aggregates(
    relation=ref('stg_transactions'),
    entities=['product_id'],
    timestamp='created_at',
    grain='day',
    aggregates=[
        {'name': 'units_sold', 'agg': 'count', 'windows': ['1d', '7d', '30d']},
        {'name': 'revenue', 'agg': 'sum', 'expr': "case when status = 'completed' then amount else 0 end"},
        {'name': 'product_refund_rate', 'agg': 'rate', 'expr': "status <> 'completed'", 'windows': ['30d']},
    ],
    windows=['7d', '30d'],
) }}
