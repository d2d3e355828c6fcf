{#-
  Time in the featsync macros: a naive timestamp means UTC, a zoned one (timestamptz,
  Snowflake TIMESTAMP_TZ / TIMESTAMP_LTZ) is the instant it is. Comparing a naive value
  with a zoned one directly would let the engine convert the naive side with the session
  TimeZone (DuckDB, Postgres and Snowflake all do), so the answer would depend on a
  setting of whoever runs the query. These macros never let it:

    featsync.is_zoned(data_type)          is a declared or introspected type zoned?
    featsync.utc(expression, data_type)   the value as a naive UTC timestamp
    featsync.compare_time(l, l_type, op, r, r_type)
                                          l op r, comparing instants

  On Spark a zoned column is TIMESTAMP_LTZ (declared `timestamp_ltz`; Spark's DESCRIBE names
  it `timestamp`, which featsync.introspected_type reads as such), a naive one TIMESTAMP_NTZ
  (declared `timestamp` or `timestamp_ntz`: the spark target sets spark.sql.timestampType).
  Spark compares the two by casting the naive side in the session time zone, and its cast
  of an instant to TIMESTAMP_NTZ also reads the session zone (ambiguous in the repeated hour
  of a DST change): spark__utc counts microseconds since the epoch instead.

  Interval arithmetic (TTL bounds) is done on naive UTC values only: on a zoned value,
  `- interval '90 days'` would count calendar days in the session time zone (23 or 25
  hours across a DST change). The Python registry reads types with the same rule
  (featsync.registry.types); a test runs one table of type names through both.
-#}

{% macro is_zoned(data_type) %}
  {%- set t = modules.re.sub('\\s+', ' ', (data_type or '') | string | lower | trim) -%}
  {{ return(modules.re.match('^(timestamptz|timestampltz|timestamp_tz|timestamp_ltz)( ?\\(\\s*\\d+\\s*\\))?$', t) is not none
            or modules.re.match('^timestamp( ?\\(\\s*\\d+\\s*\\))? with (local )?time zone$', t) is not none) }}
{% endmacro %}


{#- The value of a timestamp expression as a naive UTC timestamp (unchanged when it is naive). -#}
{% macro utc(expression, data_type) %}
  {{ return(adapter.dispatch('utc', 'featsync')(expression, data_type)) }}
{% endmacro %}

{% macro default__utc(expression, data_type) -%}
  {%- if featsync.is_zoned(data_type) -%}(({{ expression }}) at time zone 'UTC'){%- else -%}{{ expression }}{%- endif -%}
{%- endmacro %}

{% macro snowflake__utc(expression, data_type) -%}
  {%- if featsync.is_zoned(data_type) -%}convert_timezone('UTC', {{ expression }})::timestamp_ntz{%- else -%}{{ expression }}{%- endif -%}
{%- endmacro %}


{% macro spark__utc(expression, data_type) -%}
  {%- if featsync.is_zoned(data_type) -%}timestampadd(MICROSECOND, unix_micros({{ expression }}), timestamp_ntz'1970-01-01 00:00:00'){%- else -%}{{ expression }}{%- endif -%}
{%- endmacro %}


{#- `left op right` on instants, whatever the two types. The left side is left bare where
    possible, so a feature view's (keys, event time) index still serves the lookup. -#}
{% macro compare_time(left, left_type, op, right, right_type) %}
  {{ return(adapter.dispatch('compare_time', 'featsync')(left, left_type, op, right, right_type)) }}
{% endmacro %}

{% macro default__compare_time(left, left_type, op, right, right_type) -%}
  {%- if featsync.is_zoned(left_type) == featsync.is_zoned(right_type) -%}
    {{ left }} {{ op }} {{ right }}
  {%- else -%}
    {#- `x at time zone 'UTC'` turns a naive UTC value into its instant and an instant into
        its naive UTC value: either way the right side takes the left side's family. -#}
    {{ left }} {{ op }} (({{ right }}) at time zone 'UTC')
  {%- endif -%}
{%- endmacro %}

{% macro snowflake__compare_time(left, left_type, op, right, right_type) -%}
  {%- if featsync.is_zoned(left_type) == featsync.is_zoned(right_type) -%}
    {{ left }} {{ op }} {{ right }}
  {%- else -%}
    {{ featsync.snowflake__utc(left, left_type) }} {{ op }} {{ featsync.snowflake__utc(right, right_type) }}
  {%- endif -%}
{%- endmacro %}


{% macro spark__compare_time(left, left_type, op, right, right_type) -%}
  {%- if featsync.is_zoned(left_type) == featsync.is_zoned(right_type) -%}
    {{ left }} {{ op }} {{ right }}
  {%- else -%}
    {{ featsync.spark__utc(left, left_type) }} {{ op }} {{ featsync.spark__utc(right, right_type) }}
  {%- endif -%}
{%- endmacro %}


{#- A column type as the warehouse's introspection names it, in the words featsync.is_zoned
    reads: on Spark (and Databricks) DESCRIBE calls TIMESTAMP_LTZ `timestamp` whatever
    spark.sql.timestampType says, and TIMESTAMP_NTZ `timestamp_ntz`. -#}
{% macro introspected_type(data_type) %}
  {{ return(adapter.dispatch('introspected_type', 'featsync')(data_type)) }}
{% endmacro %}

{% macro default__introspected_type(data_type) %}
  {{ return(data_type) }}
{% endmacro %}

{% macro spark__introspected_type(data_type) %}
  {{ return('timestamp_ltz' if (data_type or '') | string | lower | trim == 'timestamp' else data_type) }}
{% endmacro %}


{#- The column types of a spine: `spine_types` when given ({column: data_type}), else those
    of the relation in the warehouse (a ref or source; introspected at compile time), else
    none known (a relation given as text), which means naive timestamps. -#}
{% macro _spine_types(spine, spine_types) %}
  {%- if spine_types is not none -%}
    {{ return(spine_types) }}
  {%- endif -%}
  {%- set types = {} -%}
  {%- if spine is not string and execute -%}
    {%- for column in adapter.get_columns_in_relation(spine) -%}
      {%- do types.update({column.name | lower: featsync.introspected_type(column.data_type)}) -%}
    {%- endfor -%}
  {%- endif -%}
  {{ return(types) }}
{% endmacro %}
