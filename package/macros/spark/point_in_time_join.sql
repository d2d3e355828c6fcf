{#-
  featsync.point_in_time_join on Spark: the sort-based as-of join.

  Spark SQL has no ASOF JOIN, and a range join (keys equal, feature ts <= spine ts) is a
  cross product per key. Instead, per feature view, the spine rows and the feature rows are
  unioned, tagged, and one window partitioned by the entity keys (a shuffle by key) and ordered
  by time runs over them: for each spine row, the matched feature row is an aggregate over the
  rows before it. Views are joined one after the other, each a shuffle and a sort of the spine
  plus that view's rows; the plan has no join at all.

    - Each feature row travels as one struct (featsync_row), so a matched row whose feature
      values are NULL is still a match, and its columns stay together.
    - as_of='event': rows are ordered by (event ts, tag, the tie-break order); feature rows
      sort before spine rows at equal times (the bound is inclusive), and at equal event times
      the tie-break winner comes last. last(featsync_row, true) over the running frame is the
      match: the latest feature row at or before the spine row (NULL spine rows are skipped).
    - as_of='available': rows are placed at availability greatest(event ts, created ts) and
      the match is the best row so far, max_by(featsync_row, tie-break order) over the running
      frame, so a row backfilled late never wins before it was known, and once known it wins
      only if it is the best by the usual order.
    - Times meet as naive UTC (featsync.utc): a zoned (TIMESTAMP_LTZ) spine or feature time
      is placed at its instant whatever the session time zone; the output keeps the spine's
      own columns and the features' own types.
    - Then the shared rules (featsync._pit_still_valid): TTL after the match, inclusive bound,
      and SCD2 validity [valid_from, valid_to).

  The tie-break order is one struct of (is not null, value) pairs, so NULLs sort lowest
  whatever Spark's struct ordering does with NULL fields; strings compare bytewise (UTF-8
  binary collation), as on DuckDB and Snowflake.
-#}
{% macro spark__point_in_time_join(spine, plan, spine_timestamp, as_of, strategy) %}
{%- if strategy == 'lateral' -%}
  {{ exceptions.raise_compiler_error("featsync.point_in_time_join: strategy='lateral' needs LATERAL joins, which Spark does not have; Spark always uses the sort-based as-of plan") }}
{%- endif -%}
with featsync_input0 as (
    select struct(featsync_spine.*) as featsync_spine
    from {{ spine }} as featsync_spine
),
{%- for view in plan %}
{%- set i = view.index %}
{%- set available = as_of == 'available' and view.created_timestamp %}
{%- set previous = [] %}
{%- for earlier in plan if earlier.index < i %}{% do previous.append('featsync_match' ~ earlier.index) %}{% endfor %}
featsync_tagged{{ i }} as (
    {#- Spine rows (tag 1) and this view's rows (tag 0) side by side, keyed and timed alike. #}
    select
        {%- for key in view.spine_keys %}
        featsync_spine.{{ key }} as featsync_key{{ loop.index0 }},
        {%- endfor %}
        {{ featsync.utc('featsync_spine.' ~ spine_timestamp, view.spine_timestamp_type) }} as featsync_time,
        1 as featsync_tag,
        featsync_spine,
        {%- for name in previous %}
        {{ name }},
        {%- endfor %}
        null as featsync_row
    from featsync_input{{ i }}
    union all
    select
        {%- for key in view.entities %}
        {{ key }},
        {%- endfor %}
        {%- if available %}
        greatest({{ featsync.utc(view.timestamp, view.types[view.timestamp]) }}, {{ featsync._available_at(view, '', true) }}),
        {%- else %}
        {{ featsync.utc(view.timestamp, view.types[view.timestamp]) }},
        {%- endif %}
        0,
        null,
        {%- for name in previous %}
        null,
        {%- endfor %}
        named_struct(
            {%- for column in view.select_columns %}
            '{{ column }}', {{ column }},
            {%- endfor %}
            'featsync_order', {{ featsync._spark_pit_order(view) }}
        )
    from {{ view.relation }}
    where {% for key in view.entities %}{{ key }} is not null and {% endfor %}{{ view.timestamp }} is not null
),
featsync_input{{ i + 1 }} as (
    select featsync_spine, {% for name in previous %}{{ name }}, {% endfor %}featsync_match{{ i }}
    from (
        select
            featsync_tag,
            featsync_spine,
            {%- for name in previous %}
            {{ name }},
            {%- endfor %}
            {%- if available %}
            max_by(featsync_row, featsync_row.featsync_order) over (
                partition by {% for key in view.entities %}featsync_key{{ loop.index0 }}{{ ', ' if not loop.last }}{% endfor %}
                order by featsync_time, featsync_tag
                rows between unbounded preceding and current row
            ) as featsync_match{{ i }}
            {%- else %}
            last(featsync_row, true) over (
                partition by {% for key in view.entities %}featsync_key{{ loop.index0 }}{{ ', ' if not loop.last }}{% endfor %}
                order by featsync_time, featsync_tag, featsync_row.featsync_order
                rows between unbounded preceding and current row
            ) as featsync_match{{ i }}
            {%- endif %}
        from featsync_tagged{{ i }}
    ) as featsync_windowed
    where featsync_tag = 1
){{ ',' }}
{%- endfor %}
featsync_joined as (
    select
        featsync_spine.*
        {%- for view in plan %}
        {%- set match = 'featsync_match' ~ view.index %}
        {%- set valid = featsync._pit_still_valid(view, match, 'featsync_spine', spine_timestamp) %}
        {%- for column, output in view.features %},
        {% if valid == 'true' %}{{ match }}.{{ column }}{% else %}case when {{ valid }} then {{ match }}.{{ column }} end{% endif %} as {{ output }}
        {%- endfor %}
        {%- endfor %}
    from featsync_input{{ plan | length }}
)
select * from featsync_joined
{%- endmacro %}


{#- The tie-break order of featsync._pit_order as one orderable struct: event time, created
    time, then the other columns in declared order, each as (is not null, value) so that NULL
    sorts lowest. -#}
{% macro _spark_pit_order(view) -%}
named_struct(
  {%- for column, data_type in view.order_columns %}
    'n{{ loop.index0 }}', {{ column }} is not null, 'v{{ loop.index0 }}', {{ featsync.bytewise(column, data_type) }}{{ ',' if not loop.last }}
  {%- endfor %})
{%- endmacro %}
