{{ featsync.window_aggregates(
    relation=ref('stg_transactions'),
    entities=['merchant_id'],
    timestamp='created_at',
    grain='day',
    aggregates=[
        {'name': 'merchant_transaction_count', 'agg': 'count'},
        {'name': 'chargeback_rate', 'agg': 'rate', 'expr': "status = 'chargeback'"},
        {'name': 'refund_rate', 'agg': 'rate', 'expr': "status = 'refunded'"},
        {'name': 'avg_ticket_size', 'agg': 'avg', 'expr': 'amount'},
    ],
    windows=['30d', '90d'],
) }}
