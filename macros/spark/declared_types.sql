{#-
  Spark: the declared types of the example (column_types of seeds, data_type of contracted
  columns) are written in featsync's portable vocabulary (text, float8, timestamp, ...), which
  Spark's parser does not know. These spark__ overrides of dbt's own macros translate them with
  featsync.sql_type and then hand over to dbt-spark's implementation unchanged. They take effect
  in the project that defines them (the example); a project using featsync as a package and
  declaring Spark's own type names needs none of it (and the translation leaves those alone).
-#}

{#- A copy of a seed/model node whose config.column_types are Spark type names. -#}
{% macro _spark_seed_node(model) %}
  {%- set column_types = {} -%}
  {%- for name, data_type in (model['config'].get('column_types') or {}).items() -%}
    {%- do column_types.update({name: featsync.sql_type(data_type)}) -%}
  {%- endfor -%}
  {%- set node_config = {} -%}
  {%- do node_config.update(model['config']) -%}
  {%- do node_config.update({'column_types': column_types}) -%}
  {%- set node = {} -%}
  {%- do node.update(model) -%}
  {%- do node.update({'config': node_config}) -%}
  {{ return(node) }}
{% endmacro %}

{% macro spark__create_csv_table(model, agate_table) %}
  {{ return(dbt.spark__create_csv_table(featsync._spark_seed_node(model), agate_table)) }}
{% endmacro %}

{% macro spark__load_csv_rows(model, agate_table) %}
  {{ return(dbt.spark__load_csv_rows(featsync._spark_seed_node(model), agate_table)) }}
{% endmacro %}

{#- Contracts: dbt compares the model's query schema with `select cast(null as <data_type>) ...`. -#}
{% macro spark__get_empty_schema_sql(columns) %}
  {%- set translated = {} -%}
  {%- for name, column in columns.items() -%}
    {%- set copy = {} -%}
    {%- do copy.update(column) -%}
    {%- if column.get('data_type') -%}
      {%- do copy.update({'data_type': featsync.sql_type(column['data_type'])}) -%}
    {%- endif -%}
    {%- do translated.update({name: copy}) -%}
  {%- endfor -%}
  {{ return(dbt.default__get_empty_schema_sql(translated)) }}
{% endmacro %}
