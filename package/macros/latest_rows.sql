{#-
  featsync.latest_rows: the latest row of every entity of a feature view, as one SELECT.

  What the online store holds: the same row a point-in-time join would pick for a spine
  time after every event, by the same order (featsync._pit_order: event time, created
  time, then the other columns). Rows with NULL keys or event times are never returned.
  TTL is not applied here: the online store expires each row at event time + ttl.

  changed_at=true adds `featsync_changed_at`, what moves when a row changes (featsync push's
  incremental watermark): the created time where the view declares one (NULL: known at
  event time), else the event time; for SCD2 views (valid_to), the later of that and valid_to,
  since closing a row (a dbt snapshot's hard delete sets only dbt_valid_to) changes what the
  join at now returns without moving either time; always a naive UTC timestamp, whatever the
  columns' types. A valid_to in the future makes the marker future: push re-sends such a row
  each time (harmless) until then, as its watermark never passes its own clock. SCD2 views
  also get `featsync_dated_at`, the marker without valid_to: what "dated in the future"
  (bad data, a breach) is judged by, since a future valid_to is an ordinary scheduled end.
-#}
{% macro latest_rows(feature_view, changed_at=false) %}
  {%- if not execute -%}
    {%- do ref(feature_view) -%}
    {{ return('select 1 as featsync_parse_placeholder') }}
  {%- endif -%}
  {%- set view = featsync._pit_plan([feature_view ~ ':*'], none, {}, false)[0] -%}
select {{ view.select_columns | join(', ') }}
{%- if changed_at %},
  {%- set marker = featsync._available_at(view, '', true) if view.created_timestamp else featsync.utc(view.timestamp, view.types[view.timestamp]) -%}
  {%- if view.valid_to %}
    {%- set valid_to = featsync.utc(view.valid_to, view.types[view.valid_to]) %}
    greatest({{ marker }}, coalesce({{ valid_to }}, {{ marker }})) as featsync_changed_at,
    {{ marker }} as featsync_dated_at
  {%- else %}
    {{ marker }} as featsync_changed_at
  {%- endif %}
{%- endif %}
from (
    select
        {{ view.select_columns | join(', ') }},
        row_number() over (partition by {{ view.entities | join(', ') }} order by {{ featsync._pit_order(view, none, 'desc') }}) as featsync_pick
    from {{ view.relation }}
    where {% for key in view.entities %}{{ key }} is not null and {% endfor %}{{ view.timestamp }} is not null
) as featsync_latest
where featsync_pick = 1
{%- endmacro %}
