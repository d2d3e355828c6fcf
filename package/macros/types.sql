{#-
  featsync.sql_type: a column type of featsync's vocabulary (the names the YAML contract and
  the macros use: text, float8, bigint, boolean, timestamp) as the engine spells it in SQL.

  DuckDB, PostgreSQL and Snowflake know every one of these names, so they pass through
  unchanged. Spark knows none of text, float8 or int8; there they become string, double and
  bigint, and timestamp becomes timestamp_ntz (naive UTC, whatever the session's default
  timestamp type). Names Spark already knows pass through, so applying it twice is harmless.
-#}
{% macro sql_type(data_type) %}
  {{ return(adapter.dispatch('sql_type', 'featsync')(data_type)) }}
{% endmacro %}

{% macro default__sql_type(data_type) %}
  {{ return(data_type) }}
{% endmacro %}

{% macro spark__sql_type(data_type) %}
  {%- set spark_names = {
      'text': 'string', 'varchar': 'string', 'character varying': 'string',
      'float8': 'double', 'double precision': 'double', 'float64': 'double',
      'int8': 'bigint', 'int64': 'bigint',
      'bool': 'boolean',
      'timestamp': 'timestamp_ntz', 'timestamp without time zone': 'timestamp_ntz', 'datetime': 'timestamp_ntz',
  } -%}
  {{ return(spark_names.get((data_type or '') | trim | lower, data_type)) }}
{% endmacro %}
