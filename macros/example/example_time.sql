{#-
  Used only by the example staging models: shift a timestamp of the checked-in example
  data by var featsync_example_shift_days (default 0, so builds are reproducible). `make
  demo` sets it so the data ends yesterday and TTLs have not run out when it is pushed.
-#}
{% macro example_time(column) -%}
  {%- set days = var('featsync_example_shift_days', 0) | int -%}
  {%- if days -%}
    cast({{ column }} as {{ featsync.sql_type('timestamp') }}) + {{ featsync.interval_literal(days * 86400) }}
  {%- else -%}
    cast({{ column }} as {{ featsync.sql_type('timestamp') }})
  {%- endif -%}
{%- endmacro %}
