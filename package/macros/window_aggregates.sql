{#-
  featsync.window_aggregates: rolling-window aggregates per entity, in one SELECT.

  Arguments
    relation           the events (a ref, source or CTE name)
    entities           list of key columns, e.g. ['user_id'] or ['user_id', 'merchant_id']
    timestamp          event-time column of the events (naive UTC)
    aggregates         list of {name, agg, expr?, windows?}; agg is one of
                       count | sum | avg | max | min | rate. `rate` is the share of rows
                       whose boolean `expr` is true. `windows` overrides the default list.
    windows            default windows, e.g. ['1d', '7d', '30d', '90d'] (units d, h, m)
    grain              'event' (default) or 'day', the accuracy of the feature view:
        event  one row per entity and distinct event time; each window covers
               [t - window, t] inclusive. Exact at each event: the value is as of the
               entity's latest event and does not slide forward between events.
        day    a daily snapshot: one row per entity for each UTC day on which a window
               value changes (a day with events, or the day an event leaves a window),
               stamped at the end of the day (day + 1d). Each window covers whole days,
               [day - (window - 1d), day]. Rows stop at the last day in the data.
    created_timestamp  optional column telling when each event became known (ingestion
                       time); the output's created_timestamp is the latest of them inside
                       the largest window, i.e. when the whole row became computable.

  Output: entities, event_timestamp, [created_timestamp], then `<name>_<window>` for every
  aggregate and window. Counts are bigint; sums, averages and rates float8; max/min keep
  the type of `expr`. Events with a NULL key are dropped.
-#}
{% macro window_aggregates(relation, entities, timestamp, aggregates, windows=none, grain='event', created_timestamp=none) %}
  {{ return(adapter.dispatch('window_aggregates', 'featsync')(relation, entities, timestamp, aggregates, windows, grain, created_timestamp)) }}
{% endmacro %}

{% macro default__window_aggregates(relation, entities, timestamp, aggregates, windows, grain, created_timestamp) %}
{%- if grain not in ['event', 'day'] -%}
  {{ exceptions.raise_compiler_error("featsync.window_aggregates: grain must be 'event' or 'day', got '" ~ grain ~ "'") }}
{%- endif -%}
{%- if entities is string or entities | length == 0 -%}
  {{ exceptions.raise_compiler_error("featsync.window_aggregates: entities must be a non-empty list of column names") }}
{%- endif -%}
{%- set keys = entities | join(', ') -%}
{#- Resolve every aggregate into its partial columns (per entity and bucket) and every
    (aggregate, window) pair into one output column, once, before rendering. -#}
{%- set partials = [] -%}
{%- set outputs = [] -%}
{%- set ns = namespace(largest=0) -%}
{%- for a in aggregates -%}
  {%- set p = 'featsync_p' ~ loop.index0 -%}
  {%- if a.agg == 'count' -%}
    {%- do partials.append(('count(' ~ (a.expr or '*') ~ ')', p ~ '_n')) -%}
  {%- elif a.agg in ['sum', 'avg', 'rate', 'max', 'min'] and not a.expr -%}
    {{ exceptions.raise_compiler_error("featsync.window_aggregates: aggregate '" ~ a.name ~ "' (" ~ a.agg ~ ") needs an expr") }}
  {%- elif a.agg == 'sum' -%}
    {%- do partials.append(('sum(' ~ a.expr ~ ')', p ~ '_s')) -%}
  {%- elif a.agg == 'avg' -%}
    {%- do partials.append(('sum(' ~ a.expr ~ ')', p ~ '_s')) -%}
    {%- do partials.append(('count(' ~ a.expr ~ ')', p ~ '_n')) -%}
  {%- elif a.agg == 'rate' -%}
    {%- do partials.append(('sum(case when (' ~ a.expr ~ ') then 1 else 0 end)', p ~ '_s')) -%}
    {%- do partials.append(('count(*)', p ~ '_n')) -%}
  {%- elif a.agg in ['max', 'min'] -%}
    {%- do partials.append((a.agg ~ '(' ~ a.expr ~ ')', p ~ '_m')) -%}
  {%- else -%}
    {{ exceptions.raise_compiler_error("featsync.window_aggregates: aggregate '" ~ a.name ~ "' has unknown agg '" ~ a.agg ~ "' (use count, sum, avg, max, min or rate)") }}
  {%- endif -%}
  {%- for w in (a.windows or windows or []) -%}
    {%- set seconds = featsync.duration_seconds(w, "window '" ~ w ~ "' of aggregate '" ~ a.name ~ "'") -%}
    {%- if seconds is none or seconds <= 0 -%}
      {{ exceptions.raise_compiler_error("featsync.window_aggregates: window '" ~ w ~ "' of aggregate '" ~ a.name ~ "' must be a positive duration") }}
    {%- endif -%}
    {%- if grain == 'day' and seconds % 86400 != 0 -%}
      {{ exceptions.raise_compiler_error("featsync.window_aggregates: window '" ~ w ~ "' of aggregate '" ~ a.name ~ "' is not whole days, which grain='day' needs") }}
    {%- endif -%}
    {%- set ns.largest = [ns.largest, seconds] | max -%}
    {%- do outputs.append({'agg': a.agg, 'p': p, 'seconds': seconds, 'column': a.name ~ '_' ~ w}) -%}
  {%- endfor -%}
{%- endfor -%}
{%- if outputs | length == 0 -%}
  {{ exceptions.raise_compiler_error("featsync.window_aggregates: no aggregate has a window") }}
{%- endif -%}
{#- A day-grain row at day d covers [d - (window - 1d), d]; an event-grain row at t covers [t - window, t]. -#}
{%- set frame_offset = 0 if grain == 'event' else 86400 -%}
{%- set bucket = timestamp if grain == 'event' else 'cast(' ~ dbt.date_trunc('day', timestamp) ~ ' as ' ~ featsync.sql_type('timestamp') ~ ')' -%}

with featsync_partials as (
    select
        {{ keys }},
        {{ bucket }} as featsync_bucket,
        {%- if created_timestamp %}
        max({{ created_timestamp }}) as featsync_created,
        {%- endif %}
        {%- for expr, alias in partials %}
        {{ expr }} as {{ alias }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ relation }}
    where {% for k in entities %}{{ k }} is not null and {% endfor %}{{ timestamp }} is not null
    group by {{ keys }}, {{ bucket }}
),
{%- if grain == 'day' %}

featsync_grid as (
    {#- Every day on which some window value changes: the days with events, and the day
        each event leaves each window. Capped at the last day with data. -#}
    select {{ keys }}, featsync_bucket from featsync_partials
    {%- for seconds in outputs | map(attribute='seconds') | unique | sort %}
    union
    select {{ keys }}, featsync_bucket + {{ featsync.interval_literal(seconds) }} from featsync_partials
    {%- endfor %}
),

featsync_rows as (
    select
        {% for k in entities %}featsync_grid.{{ k }}, {% endfor %}
        featsync_grid.featsync_bucket,
        {%- if created_timestamp %}
        featsync_partials.featsync_created,
        {%- endif %}
        {%- for expr, alias in partials %}
        featsync_partials.{{ alias }}{{ ',' if not loop.last }}
        {%- endfor %}
    from featsync_grid
    left join featsync_partials
      on {% for k in entities %}featsync_grid.{{ k }} = featsync_partials.{{ k }} and {% endfor %}featsync_grid.featsync_bucket = featsync_partials.featsync_bucket
    where featsync_grid.featsync_bucket <= (select max(featsync_bucket) from featsync_partials)
),
{%- endif %}

featsync_windows as (
    select
        {{ keys }},
        {%- if grain == 'day' %}
        featsync_bucket + {{ featsync.interval_literal(86400) }} as event_timestamp,
        {%- else %}
        featsync_bucket as event_timestamp,
        {%- endif %}
        {%- if created_timestamp %}
        max(featsync_created) over {{ featsync._window_frame(entities, ns.largest - frame_offset) }} as featsync_created,
        {%- endif %}
        {%- for o in outputs %}
        {%- set frame = featsync._window_frame(entities, o.seconds - frame_offset) %}
        {%- if o.agg == 'count' %}
        cast(coalesce(sum({{ o.p }}_n) over {{ frame }}, 0) as bigint) as {{ o.column }}
        {%- elif o.agg == 'sum' %}
        cast(coalesce(sum({{ o.p }}_s) over {{ frame }}, 0) as {{ featsync.sql_type('float8') }}) as {{ o.column }}
        {%- elif o.agg in ['avg', 'rate'] %}
        cast(sum({{ o.p }}_s) over {{ frame }} as {{ featsync.sql_type('float8') }}) / nullif(sum({{ o.p }}_n) over {{ frame }}, 0) as {{ o.column }}
        {%- else %}
        {{ o.agg }}({{ o.p }}_m) over {{ frame }} as {{ o.column }}
        {%- endif %}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ 'featsync_rows' if grain == 'day' else 'featsync_partials' }}
)

select
    {{ keys }},
    event_timestamp,
    {%- if created_timestamp %}
    {#- A daily snapshot is known at the end of its day at the earliest. #}
    {{ 'coalesce(greatest(event_timestamp, featsync_created), event_timestamp)' if grain == 'day' else 'featsync_created' }} as created_timestamp,
    {%- endif %}
    {{ outputs | map(attribute='column') | join(',\n    ') }}
from featsync_windows
{%- endmacro %}


{#- The OVER clause of one window: the rows of this entity within `seconds` before now. -#}
{% macro _window_frame(entities, seconds) -%}
(partition by {{ entities | join(', ') }} order by featsync_bucket range between {{ featsync.interval_literal(seconds) }} preceding and current row)
{%- endmacro %}
