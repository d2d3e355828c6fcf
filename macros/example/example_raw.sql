{#-
  Used only by the example staging models: read a raw table from the checked-in
  seeds (var featsync_raw_data = "seeds", the default) or from the large parquet
  files written by `featsync generate --format parquet` (var = "parquet", DuckDB).
-#}
{% macro example_raw(name) %}
  {%- if var('featsync_raw_data', 'seeds') == 'parquet' -%}
    {{ return(source('raw_parquet', name)) }}
  {%- else -%}
    {{ return(ref(name)) }}
  {%- endif -%}
{% endmacro %}
