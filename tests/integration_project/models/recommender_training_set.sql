-- A training set with the service's on-demand features, from the consuming project: the
-- request field seconds_on_page is a spine column.
-- depends_on: {{ ref('visitor_features') }}
{{ featsync.point_in_time_join(spine=ref('page_views'), feature_service='recommender', spine_timestamp='viewed_at') }}
