{#-
  featsync.point_in_time_join: a point-in-time correct training set in one SELECT.

    {{ featsync.point_in_time_join(
        spine=ref('stg_fraud_labels'),            -- any relation with entity keys and a timestamp
        features=['user_transaction_features:transaction_count_7d', 'merchant_risk_features:*'],
        feature_service=none,                     -- or 'fraud_detection' / 'fraud_detection:v1'
        spine_timestamp='event_timestamp',
        join_key_map={},                          -- {join_key: spine column}, e.g. {'merchant_id': 'shop_id'}
        full_feature_names=false,                 -- true: columns named <feature_view>__<feature>
        as_of='event',                            -- 'available': also require created_timestamp <= spine ts
        strategy=none,                            -- 'lateral' forces the LATERAL plan (cross-checks)
        spine_types=none,                         -- {column: data_type} of the spine; default: introspected
    ) }}

  Semantics, identical on every engine (docs/training-sets.md, "Semantics"):
    - a feature row matches when its event timestamp <= the spine timestamp (inclusive);
    - ties on the event timestamp: the latest created_timestamp wins, then the row with the
      greatest feature values in declared column order (NULLs lowest, text compared bytewise);
    - TTL is applied after the match: a match older than spine ts - ttl gives NULLs, never an
      older row; the bound is inclusive; no ttl means no bound;
    - SCD2 views (meta valid_to) also need spine ts < valid_to: the range [valid_from, valid_to);
    - as_of='available' makes a row usable only from greatest(event ts, created ts) on, so
      values backfilled after the spine time cannot leak;
    - every spine row is kept, duplicates too; NULL keys or timestamps give NULL features;
    - time is compared as instants: naive timestamps mean UTC, zoned ones are what they are,
      on both sides, whatever the session time zone (macros/time.sql); output columns keep
      their types (the spine's and the features').

  Entities, timestamps and ttl come from each feature view's meta in dbt's graph. The graph is
  empty while dbt parses, so a model that names a feature_service must declare its feature
  views with `-- depends_on: {{ ref('view') }}` lines; views named in `features` are ref'd here.

  The spine's column types come from the warehouse when the spine is a ref or source (one
  introspection query at compile time), or from `spine_types`; a spine given as text is
  taken to have naive timestamps. Known spine columns are also checked: the time column
  and the join keys must exist, and no spine column may have a feature's output name.
-#}
{% macro point_in_time_join(spine, features=none, feature_service=none, spine_timestamp='event_timestamp', join_key_map={}, full_feature_names=false, as_of='event', strategy=none, spine_types=none) %}
  {%- if as_of not in ['event', 'available'] -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: as_of must be 'event' or 'available', got '" ~ as_of ~ "'") }}
  {%- endif -%}
  {%- if strategy not in [none, 'asof', 'lateral'] -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: strategy must be 'asof' or 'lateral', got '" ~ strategy ~ "'") }}
  {%- endif -%}
  {%- if (features is none) == (feature_service is none) -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: pass exactly one of features=[...] or feature_service='name'") }}
  {%- endif -%}
  {%- if not execute -%}
    {#- Parse time: register the dependencies we can see, emit nothing. -#}
    {%- for item in (features or []) -%}
      {%- do ref(item.split(':')[0]) -%}
    {%- endfor -%}
    {{ return('select 1 as featsync_parse_placeholder') }}
  {%- endif -%}
  {%- set plan = featsync._pit_plan(features, feature_service, join_key_map, full_feature_names) -%}
  {%- do featsync._check_identifier(spine_timestamp, 'spine_timestamp') -%}
  {%- set service = featsync.feature_service_spec(feature_service) if feature_service is not none else {} -%}
  {%- set known = featsync._spine_types(spine, spine_types) -%}
  {%- do featsync._check_spine(known, spine_timestamp, plan, service) -%}
  {%- for view in plan -%}
    {#- The spine time column's type travels with each view of the plan (the engine macros'
        signature stays the same). -#}
    {%- do view.update({'spine_timestamp_type': known.get(spine_timestamp, 'timestamp')}) -%}
  {%- endfor -%}
  {%- set joined = adapter.dispatch('point_in_time_join', 'featsync')(spine, plan, spine_timestamp, as_of, strategy) -%}
  {%- if service.get('on_demand') -%}
    {{ return(featsync._with_on_demand(joined, service, plan, known)) }}
  {%- endif -%}
  {{ return(joined) }}
{% endmacro %}


{#- With the spine's columns known: its time column and join keys exist, and none of its
    columns has the name of an output feature (the result would have two such columns). -#}
{% macro _check_spine(known, spine_timestamp, plan, service) %}
  {%- if not known -%}{{ return(none) }}{%- endif -%}
  {%- set columns = known.keys() | list -%}
  {%- for column in columns if (column | lower).startswith('featsync_') -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: the spine has a column '" ~ column ~ "'; names starting with 'featsync_' are reserved for the columns featsync's SQL adds, rename it") }}
  {%- endfor -%}
  {%- set needed = [spine_timestamp] -%}
  {%- for view in plan -%}{%- for key in view.spine_keys if key not in needed -%}{%- do needed.append(key) -%}{%- endfor -%}{%- endfor -%}
  {%- for column in needed if column not in columns -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: the spine has no column '" ~ column ~ "' (columns: " ~ columns | join(', ') ~ ")") }}
  {%- endfor -%}
  {%- set outputs = [] -%}
  {%- for view in plan -%}{%- for column, output in view.features -%}{%- do outputs.append(output) -%}{%- endfor -%}{%- endfor -%}
  {%- for name in (service.get('on_demand') or {}).keys() -%}{%- do outputs.append(name) -%}{%- endfor -%}
  {%- for output in outputs if output in columns -%}
    {{ exceptions.raise_compiler_error("featsync.point_in_time_join: the spine has a column named like the feature '" ~ output ~ "'; rename it in the spine or pass full_feature_names=true") }}
  {%- endfor -%}
{% endmacro %}


{#- On-demand features of a service, computed by the warehouse over the joined row: request
    fields are spine columns of the same name. Their SQL is compiled by featsync from the
    YAML expression (one parsed form, semantics pinned per engine: sync/featsync/ondemand/compiler.py)
    into the generated macro featsync_on_demand_sql() of the root project; an entry whose
    expression or type differs from the YAML is refused, so a stale file never computes a
    different feature than the online evaluator. -#}
{% macro _with_on_demand(joined, service, plan, spine_types) %}
  {%- set key = service.get('name') ~ ':v' ~ service.version -%}
  {%- set stale = "featsync: the compiled SQL of feature service '" ~ key ~ "' in macros/featsync_on_demand.sql is missing or out of date; run any featsync command (e.g. `featsync list`) to regenerate it" -%}
  {%- if featsync_on_demand_sql is not defined -%}
    {{ exceptions.raise_compiler_error(stale) }}
  {%- endif -%}
  {%- set compiled = featsync_on_demand_sql().get(key, {}) -%}
  {%- set outputs = {} -%}
  {%- set types = {} -%}
  {%- for view in plan -%}{%- for column, output in view.features -%}
    {%- do outputs.update({column: output}) -%}
    {%- do types.update({column: view.types[column]}) -%}
  {%- endfor -%}{%- endfor -%}
  {%- for name, item in (service.get('request_fields') or {}).items() -%}
    {#- A request field is the spine column of its name: its real type when known. -#}
    {%- do types.update({name: spine_types.get(name, item.data_type if item is mapping else item)}) -%}
  {%- endfor -%}
  {%- set columns = [] -%}
  {%- for name, item in service.on_demand.items() -%}
    {%- set entry = compiled.get(name) -%}
    {%- if entry is none or entry.expression != item.expression or entry.data_type != item.data_type -%}
      {{ exceptions.raise_compiler_error(stale ~ " (on-demand feature '" ~ name ~ "')") }}
    {%- endif -%}
    {%- if target.type not in entry -%}
      {{ exceptions.raise_compiler_error("featsync: on-demand features are compiled for " ~ ['duckdb', 'postgres', 'snowflake', 'spark'] | join(', ') ~ ", not " ~ target.type) }}
    {%- endif -%}
    {%- set ns = namespace(sql=entry[target.type]) -%}
    {%- for input in entry.inputs -%}
      {#- Date parts of a zoned timestamp are taken in UTC, as the online evaluator does. -#}
      {%- set value = featsync.utc('featsync_joined.' ~ outputs.get(input, input), types.get(input)) -%}
      {%- set ns.sql = ns.sql.replace(adapter.quote('featsync_input:' ~ input), value) -%}
    {%- endfor -%}
    {%- do columns.append(ns.sql ~ ' as ' ~ featsync._check_identifier(name, 'on-demand feature')) -%}
  {%- endfor -%}
select
    featsync_joined.*,
    {{ columns | join(',\n    ') }}
from (
{{ joined }}
) as featsync_joined
{%- endmacro %}


{#- LATERAL: Postgres and the default. One ordered, limited lookup per spine row and view;
    the feature view's (keys, event time) index (featsync.feature_view_index) serves it. -#}
{% macro default__point_in_time_join(spine, plan, spine_timestamp, as_of, strategy) %}
select
    featsync_spine.*
    {%- for view in plan %}
    {%- for column, output in view.features %},
    featsync_fv{{ view.index }}.{{ column }} as {{ output }}
    {%- endfor %}
    {%- endfor %}
from {{ spine }} as featsync_spine
{%- for view in plan %}
left join lateral (
    select featsync_match.*
    from (
        select {{ view.select_columns | join(', ') }}
        from {{ view.relation }} as featsync_row
        where {% for key in view.entities %}featsync_row.{{ key }} = featsync_spine.{{ view.spine_keys[loop.index0] }}
          and {% endfor %}{{ featsync.compare_time('featsync_row.' ~ view.timestamp, view.types[view.timestamp], '<=', 'featsync_spine.' ~ spine_timestamp, view.spine_timestamp_type) }}
          {%- if as_of == 'available' and view.created_timestamp %}
          and {{ featsync.compare_time(featsync._available_at(view, 'featsync_row.'), featsync._available_type(view), '<=', 'featsync_spine.' ~ spine_timestamp, view.spine_timestamp_type) }}
          {%- endif %}
        order by {{ featsync._pit_order(view, 'featsync_row', 'desc') }}
        limit 1
    ) as featsync_match
    where {{ featsync._pit_still_valid(view, 'featsync_match', 'featsync_spine', spine_timestamp) }}
) as featsync_fv{{ view.index }} on true
{%- endfor %}
{%- endmacro %}


{#- ASOF (DuckDB, Snowflake): deduplicate each view to one row per (keys, as-of time) first,
    because ASOF picks an arbitrary row among equal right-side timestamps. -#}
{% macro duckdb__point_in_time_join(spine, plan, spine_timestamp, as_of, strategy) %}
  {{ return(featsync._pit_asof(spine, plan, spine_timestamp, as_of, strategy, 'duckdb')) }}
{% endmacro %}

{% macro snowflake__point_in_time_join(spine, plan, spine_timestamp, as_of, strategy) %}
  {{ return(featsync._pit_asof(spine, plan, spine_timestamp, as_of, strategy, 'snowflake')) }}
{% endmacro %}

{% macro _pit_asof(spine, plan, spine_timestamp, as_of, strategy, dialect) %}
{%- if strategy == 'lateral' -%}
  {{ return(featsync.default__point_in_time_join(spine, plan, spine_timestamp, as_of, strategy)) }}
{%- endif %}
{#- The as-of times are naive UTC. A zoned spine time gets a naive UTC copy to match on
    (an ASOF condition compares two columns), which the output leaves out again. -#}
{%- set spine_type = (plan[0].get('spine_timestamp_type') if plan else none) or 'timestamp' -%}
{%- set zoned_spine = featsync.is_zoned(spine_type) -%}
{%- set spine_asof = 'featsync_spine_ts' if zoned_spine else spine_timestamp -%}
with
{%- for view in plan %}
{%- set available = as_of == 'available' and view.created_timestamp %}
{%- if available %}
featsync_ranked{{ view.index }} as (
    {#- Rank every row per entity in the tie-break order; a row becomes usable at
        greatest(event ts, created ts), as naive UTC. -#}
    select
        {{ view.select_columns | join(', ') }},
        row_number() over (partition by {{ view.entities | join(', ') }} order by {{ featsync._pit_order(view, none, 'asc') }}) as featsync_rank,
        greatest({{ featsync.utc(view.timestamp, view.types[view.timestamp]) }}, {{ featsync._available_at(view, '', true) }}) as featsync_asof
    from {{ view.relation }}
    where {% for key in view.entities %}{{ key }} is not null and {% endfor %}{{ view.timestamp }} is not null
),
featsync_best{{ view.index }} as (
    {#- The best row usable at each availability time: a running max of the rank. -#}
    select
        {{ view.entities | join(', ') }},
        featsync_asof,
        max(max(featsync_rank)) over (partition by {{ view.entities | join(', ') }} order by featsync_asof rows between unbounded preceding and current row) as featsync_rank
    from featsync_ranked{{ view.index }}
    group by {{ view.entities | join(', ') }}, featsync_asof
),
featsync_fv{{ view.index }} as (
    select {% for c in view.select_columns %}featsync_ranked.{{ c }}, {% endfor %}featsync_best.featsync_asof
    from featsync_best{{ view.index }} as featsync_best
    join featsync_ranked{{ view.index }} as featsync_ranked
      on {% for key in view.entities %}featsync_ranked.{{ key }} = featsync_best.{{ key }} and {% endfor %}featsync_ranked.featsync_rank = featsync_best.featsync_rank
){{ ',' if not loop.last }}
{%- else %}
featsync_fv{{ view.index }} as (
    {#- Keep the last row of each (keys, event time) group in tie-break order: one sort per
        entity, cheaper than partitioning by (keys, event time) for row_number. -#}
    select {{ view.select_columns | join(', ') }}, {{ featsync.utc(view.timestamp, view.types[view.timestamp]) }} as featsync_asof
    from (
        select
            {{ view.select_columns | join(', ') }},
            lead({{ view.timestamp }}) over (partition by {{ view.entities | join(', ') }} order by {{ featsync._pit_order(view, none, 'asc') }}) as featsync_next
        from {{ view.relation }}
        where {% for key in view.entities %}{{ key }} is not null and {% endfor %}{{ view.timestamp }} is not null
    ) as featsync_deduplicated
    where featsync_next is null or featsync_next <> {{ view.timestamp }}
){{ ',' if not loop.last }}
{%- endif %}
{%- endfor %}

select
    featsync_spine.*{% if zoned_spine %} exclude (featsync_spine_ts){% endif %}
    {%- for view in plan %}
    {%- set valid = featsync._pit_still_valid(view, 'featsync_fv' ~ view.index, 'featsync_spine', spine_asof, 'timestamp' if zoned_spine else spine_type) %}
    {%- for column, output in view.features %},
    {% if valid == 'true' %}featsync_fv{{ view.index }}.{{ column }}{% else %}case when {{ valid }} then featsync_fv{{ view.index }}.{{ column }} end{% endif %} as {{ output }}
    {%- endfor %}
    {%- endfor %}
{%- if zoned_spine %}
from (select *, {{ featsync.utc(spine_timestamp, spine_type) }} as featsync_spine_ts from {{ spine }}) as featsync_spine
{%- else %}
from {{ spine }} as featsync_spine
{%- endif %}
{%- for view in plan %}
{%- set fv = 'featsync_fv' ~ view.index %}
{%- if dialect == 'snowflake' %}
asof join {{ fv }}
  match_condition (featsync_spine.{{ spine_asof }} >= {{ fv }}.featsync_asof)
  on {% for key in view.entities %}featsync_spine.{{ view.spine_keys[loop.index0] }} = {{ fv }}.{{ key }}{{ ' and ' if not loop.last }}{% endfor %}
{%- else %}
asof left join {{ fv }}
  on {% for key in view.entities %}featsync_spine.{{ view.spine_keys[loop.index0] }} = {{ fv }}.{{ key }}
  and {% endfor %}featsync_spine.{{ spine_asof }} >= {{ fv }}.featsync_asof
{%- endif %}
{%- endfor %}
{%- endmacro %}


{#- The total order that decides between candidate rows: event time, then created time,
    then every other column in declared order; NULLs lowest, text bytewise. 'desc' puts
    the winner first, 'asc' last. -#}
{% macro _pit_order(view, alias, direction) -%}
  {%- set prefix = alias ~ '.' if alias else '' -%}
  {%- set nulls = 'nulls last' if direction == 'desc' else 'nulls first' -%}
  {%- set parts = [] -%}
  {%- for column, data_type in view.order_columns -%}
    {%- do parts.append(featsync.bytewise(prefix ~ column, data_type) ~ ' ' ~ direction ~ ' ' ~ nulls) -%}
  {%- endfor -%}
  {{ parts | join(', ') }}
{%- endmacro %}


{#- A matched row still applies at the spine time: within the TTL (inclusive bound) and,
    for SCD2 views, before valid_to. 'true' when neither applies. The online store applies
    this same rule at the clock's instant (which rows push writes, each key's PXAT, the
    read-time ttl check, verify): sync/featsync/online/validity.py states it once for them;
    change both together. The TTL bound is computed on the naive UTC spine time (no
    calendar arithmetic in a session time zone). -#}
{% macro _pit_still_valid(view, match, spine, spine_timestamp, spine_type=none) -%}
  {%- set spine_type = spine_type or view.get('spine_timestamp_type') or 'timestamp' -%}
  {%- set types = view.get('types') or {} -%}
  {%- set at = spine ~ '.' ~ spine_timestamp -%}
  {%- set conditions = [] -%}
  {%- if view.ttl -%}
    {%- set bound = featsync.utc(at, spine_type) ~ ' - ' ~ featsync.interval_literal(view.ttl) -%}
    {%- do conditions.append(featsync.compare_time(match ~ '.' ~ view.timestamp, types.get(view.timestamp), '>=', bound, 'timestamp')) -%}
  {%- endif -%}
  {%- if view.valid_to -%}
    {%- do conditions.append('(' ~ match ~ '.' ~ view.valid_to ~ ' is null or ' ~ featsync.compare_time(at, spine_type, '<', match ~ '.' ~ view.valid_to, types.get(view.valid_to)) ~ ')') -%}
  {%- endif -%}
  {{ conditions | join(' and ') if conditions else 'true' }}
{%- endmacro %}


{#- When a row of a view with a created_timestamp becomes usable in as_of='available' mode:
    its created time, or its event time when that is NULL. Mixed types meet as naive UTC. -#}
{% macro _available_at(view, prefix, utc=false) -%}
  {%- set event_type, created_type = view.types[view.timestamp], view.types[view.created_timestamp] -%}
  {%- if utc or featsync.is_zoned(event_type) != featsync.is_zoned(created_type) -%}
    coalesce({{ featsync.utc(prefix ~ view.created_timestamp, created_type) }}, {{ featsync.utc(prefix ~ view.timestamp, event_type) }})
  {%- else -%}
    coalesce({{ prefix ~ view.created_timestamp }}, {{ prefix ~ view.timestamp }})
  {%- endif -%}
{%- endmacro %}

{% macro _available_type(view) -%}
  {%- set event_type, created_type = view.types[view.timestamp], view.types[view.created_timestamp] -%}
  {{- event_type if featsync.is_zoned(event_type) == featsync.is_zoned(created_type) else 'timestamp' -}}
{%- endmacro %}


{#- Compare text bytewise (as DuckDB and Snowflake do by default) so ties break the same
    way on every engine. -#}
{% macro bytewise(expression, data_type) %}
  {{ return(adapter.dispatch('bytewise', 'featsync')(expression, data_type)) }}
{% endmacro %}

{% macro default__bytewise(expression, data_type) -%}
  {{ expression }}
{%- endmacro %}

{#- Any text type, with or without a length (`varchar(20)`): the column's or the database's
    collation (e.g. ICU, en_US) would otherwise order 'B' after 'b'. -#}
{% macro postgres__bytewise(expression, data_type) -%}
  {%- if modules.re.match('^\\s*(text|varchar|character\\s+varying|string|char|character|bpchar)\\s*(\\(\\s*[0-9]+\\s*\\))?\\s*$', (data_type or '') | lower) -%}
    {{ expression }} collate "C"
  {%- else -%}
    {{ expression }}
  {%- endif -%}
{%- endmacro %}


{#- Post-hook for feature view models: the index LATERAL lookups need on engines that have
    no ASOF join, on (entity keys, event time). Nothing elsewhere. Enabled for every model
    under models/features in dbt_project.yml: +post-hook: "{{ featsync.feature_view_index() }}". -#}
{% macro feature_view_index() %}
  {{ return(adapter.dispatch('feature_view_index', 'featsync')()) }}
{% endmacro %}

{% macro default__feature_view_index() %}{% endmacro %}

{% macro postgres__feature_view_index() -%}
  {%- set spec = (config.get('meta') or {}).get('feature_view') -%}
  {%- if spec and model.config.materialized in ['table', 'incremental'] -%}
    {%- set entities = [spec.entities] if spec.entities is string else spec.entities -%}
    {%- for column in entities + [spec.timestamp] -%}
      {%- do featsync._check_identifier(column, "feature view '" ~ this.identifier ~ "': column") -%}
    {%- endfor -%}
    create index if not exists "{{ this.identifier ~ '__featsync_pit' }}"
      on {{ this }} ({{ (entities + [spec.timestamp]) | join(', ') }})
  {%- endif -%}
{%- endmacro %}
