{#-
  dbt snapshots on Spark tables without MERGE (plain parquet, or any file_format other than
  delta, iceberg and hudi).

  dbt-spark's snapshot materialization insists on delta/iceberg/hudi, because its update step
  is a MERGE. Those table formats need their own jars; a plain Spark has parquet. This
  materialization keeps dbt's snapshot logic whole (strategies, the staging query with its
  insert/update/delete rows, dbt_scd_id, column expansion) and replaces only the MERGE:

    1. the merged table is written to a scratch table <snapshot>__featsync_merged:
         every current row, with dbt_valid_to set where the staging query closes it
         (what MERGE's "when matched ... then update" does), plus every staging row to
         insert whose dbt_scd_id is not in the snapshot yet ("when not matched ... insert");
    2. INSERT OVERWRITE replaces the snapshot's rows with the scratch table's
       (Spark cannot overwrite a table in the statement that reads it);
    3. the scratch table is dropped.

  So each run rewrites the whole snapshot, where MERGE on delta rewrites only the files it
  touches: fine for dimension-sized history, and the price of plain parquet. The swap is not
  atomic (a crash during step 2 leaves the rows in the scratch table, which the next run
  replaces; re-run with --full-refresh after one). Delta, iceberg and hudi snapshots are left to
  dbt-spark's own materialization, unchanged.
-#}
{% materialization snapshot, adapter='spark' %}
  {%- set file_format = config.get('file_format') or 'parquet' -%}
  {%- if file_format in ['delta', 'iceberg', 'hudi'] -%}
    {{ return(dbt.materialization_snapshot_spark()) }}
  {%- endif -%}

  {%- set target_table = model.get('alias', model.get('name')) -%}
  {%- set strategy_name = config.get('strategy') -%}
  {%- set grant_config = config.get('grants') -%}

  {% set target_relation_exists, target_relation = get_or_create_relation(
          database=none,
          schema=model.schema,
          identifier=target_table,
          type='table') -%}

  {% if not adapter.check_schema_exists(model.database, model.schema) %}
    {% do create_schema(model.schema) %}
  {% endif %}

  {%- if not target_relation.is_table -%}
    {% do exceptions.relation_wrong_type(target_relation, 'table') %}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% set strategy_macro = strategy_dispatch(strategy_name) %}
  {% set strategy = strategy_macro(model, "snapshotted_data", "source_data", model['config'], target_relation_exists) %}

  {% if not target_relation_exists %}

      {% set build_sql = build_snapshot_table(strategy, model['compiled_code']) %}
      {% set final_sql = create_table_as(False, target_relation, build_sql) %}

  {% else %}

      {% set columns = config.get("snapshot_table_column_names") or get_snapshot_table_column_names() %}
      {{ adapter.valid_snapshot_target(target_relation, columns) }}

      {% set staging_table = spark_build_snapshot_staging_table(strategy, sql, target_relation) %}
      {% set missing_columns = adapter.get_missing_columns(staging_table, target_relation)
                                   | rejectattr('name', 'in', ['dbt_change_type', 'dbt_unique_key'])
                                   | list %}
      {% do create_columns(target_relation, missing_columns) %}

      {% set merged_relation = api.Relation.create(identifier=target_table ~ '__featsync_merged',
                                                   schema=target_relation.schema, database=none, type='table') %}
      {% do adapter.drop_relation(merged_relation) %}
      {% call statement('featsync_snapshot_merged') %}
        {{ featsync.spark_snapshot_merged_sql(target_relation, staging_table, merged_relation, columns) }}
      {% endcall %}
      {% set final_sql = 'insert overwrite table ' ~ target_relation ~ ' select * from ' ~ merged_relation %}

  {% endif %}

  {% call statement('main') %}
      {{ final_sql }}
  {% endcall %}

  {% if merged_relation is defined %}
      {% do adapter.drop_relation(merged_relation) %}
  {% endif %}

  {% set should_revoke = should_revoke(target_relation_exists, full_refresh_mode) %}
  {% do apply_grants(target_relation, grant_config, should_revoke) %}
  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}

  {% if staging_table is defined %}
      {% do post_snapshot(staging_table) %}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}


{#- The snapshot after this run, as MERGE would leave it (dbt-spark's spark__snapshot_merge_sql),
    written to `merged`: current rows closed by an update or delete get the staging row's
    dbt_valid_to; staging inserts whose dbt_scd_id is new are appended. -#}
{% macro spark_snapshot_merged_sql(target, staging, merged, columns) %}
  {%- set target_columns = adapter.get_columns_in_relation(target) | map(attribute='name') | list -%}
  {%- set valid_to = 'featsync_dest.' ~ columns.dbt_valid_to -%}
  {%- set current = valid_to ~ ' is null' -%}
  {%- if config.get('dbt_valid_to_current') -%}
    {%- set current = '(' ~ valid_to ~ ' = ' ~ config.get('dbt_valid_to_current') ~ ' or ' ~ valid_to ~ ' is null)' -%}
  {%- endif -%}
create table {{ merged }} using parquet as
with featsync_closed as (
    select {{ columns.dbt_scd_id }}, max({{ columns.dbt_valid_to }}) as featsync_valid_to
    from {{ staging }}
    where dbt_change_type in ('update', 'delete')
    group by {{ columns.dbt_scd_id }}
)
select
    {%- for column in target_columns %}
    {% if column == columns.dbt_valid_to -%}
    case when featsync_closed.{{ columns.dbt_scd_id }} is not null and {{ current }}
         then featsync_closed.featsync_valid_to else featsync_dest.{{ column }} end as {{ column }}
    {%- else -%}
    featsync_dest.{{ column }}
    {%- endif %}{{ ',' if not loop.last }}
    {%- endfor %}
from {{ target }} as featsync_dest
left join featsync_closed
  on featsync_closed.{{ columns.dbt_scd_id }} = featsync_dest.{{ columns.dbt_scd_id }}
union all
select {{ target_columns | join(', ') }}
from {{ staging }} as featsync_source
where dbt_change_type = 'insert'
  and not exists (select 1 from {{ target }} as featsync_dest where featsync_dest.{{ columns.dbt_scd_id }} = featsync_source.{{ columns.dbt_scd_id }})
{%- endmacro %}
