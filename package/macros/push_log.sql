{#-
  featsync.push_log: the rows pushed to a feature view with `to` offline or online_and_offline
  (FeatureStore.push, POST /push, featsync push --rows --to, featsync stream), as one SELECT,
  for the view's model to union with its batch source. That way the next dbt build and every
  training set see exactly the values the online store served (featsync.offline.pushlog).

    columns: {name: SQL type}, the columns to read, in the order the model wants them
             (the view's entities, event timestamp and features; timestamps naive UTC);
             types as featsync.sql_type takes them (text, float8, bigint, boolean, timestamp).

  DuckDB: the parquet files under env var FEATSYNC_PUSH_LOG_DIR (default data/pushed,
  relative to the working directory like the DuckDB file)/<feature_view>/*.parquet.
  PostgreSQL and Snowflake: the table featsync_push_log__<feature_view> in the target schema.
  Before the first push (no file, no table), and on other engines, no rows of those types.
-#}
{% macro push_log(feature_view, columns) %}
  {{ return(adapter.dispatch('push_log', 'featsync')(feature_view, columns)) }}
{% endmacro %}

{% macro _push_log_select(columns, relation) %}
select {% for name, type in columns.items() %}cast({{ name }} as {{ featsync.sql_type(type) }}) as {{ name }}{{ ", " if not loop.last }}{% endfor %}
from {{ relation }}
{%- endmacro %}

{% macro _push_log_empty(columns) %}
select {% for name, type in columns.items() %}cast(null as {{ featsync.sql_type(type) }}) as {{ name }}{{ ", " if not loop.last }}{% endfor %}
where 1 = 0
{%- endmacro %}

{% macro default__push_log(feature_view, columns) %}
  {{ return(featsync._push_log_empty(columns)) }}
{% endmacro %}

{% macro duckdb__push_log(feature_view, columns) %}
  {%- set folder = env_var('FEATSYNC_PUSH_LOG_DIR', 'data/pushed') ~ '/' ~ feature_view -%}
  {%- set pattern = (folder ~ '/*.parquet') | replace("'", "''") -%}
  {%- set found = 0 -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
  {%- endif -%}
  {%- if found | int > 0 -%}
    {{ return(featsync._push_log_select(columns, "read_parquet('" ~ pattern ~ "', union_by_name = true)")) }}
  {%- else -%}
    {{ return(featsync._push_log_empty(columns)) }}
  {%- endif -%}
{% endmacro %}

{% macro postgres__push_log(feature_view, columns) %}
  {{ return(featsync._push_log_table(feature_view, columns)) }}
{% endmacro %}

{% macro snowflake__push_log(feature_view, columns) %}
  {{ return(featsync._push_log_table(feature_view, columns)) }}
{% endmacro %}

{% macro _push_log_table(feature_view, columns) %}
  {%- set relation = none -%}
  {%- if execute -%}
    {%- set relation = adapter.get_relation(database=target.database, schema=target.schema, identifier='featsync_push_log__' ~ feature_view) -%}
  {%- endif -%}
  {%- if relation is not none -%}
    {{ return(featsync._push_log_select(columns, relation)) }}
  {%- else -%}
    {{ return(featsync._push_log_empty(columns)) }}
  {%- endif -%}
{% endmacro %}
