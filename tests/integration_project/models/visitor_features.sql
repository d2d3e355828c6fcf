{{ featsync.window_aggregates(
    relation=ref('page_views'),
    entities=['visitor_id'],
    timestamp='viewed_at',
    aggregates=[
        {'name': 'views', 'agg': 'count'},
        {'name': 'pricing_share', 'agg': 'rate', 'expr': "page = 'pricing'"},
        {'name': 'longest_view', 'agg': 'max', 'expr': 'seconds_on_page'},
    ],
    windows=['1d', '7d'],
) }}
