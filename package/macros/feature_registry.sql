{#-
  Reading featsync declarations from dbt's graph (execution time only: the graph is empty
  while dbt parses). The Python registry (sync/featsync/registry.py) validates the same
  declarations in full; these macros check what a join needs and fail at compile time.
-#}

{#- The graph node of the feature view model named `name`, preferring the root project. -#}
{% macro feature_view_node(name) %}
  {%- set found = [] -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and node.name == name and (node.config.meta or {}).get('feature_view') is not none -%}
      {%- do found.append(node) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if found | length == 0 -%}
    {%- set known = [] -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and (node.config.meta or {}).get('feature_view') is not none -%}
      {%- do known.append(node.name) -%}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("featsync: no feature view named '" ~ name ~ "' (known: " ~ (known | sort | join(', ') or 'none') ~ ")") }}
  {%- endif -%}
  {%- for node in found if node.package_name == project_name -%}
    {{ return(node) }}
  {%- endfor -%}
  {{ return(found[0]) }}
{% endmacro %}


{#- The feature_service meta of the exposure for 'name' (latest version), 'name:vN', or an exposure name. -#}
{% macro feature_service_spec(name) %}
  {%- set base = name.split(':')[0] -%}
  {%- set version = name.split(':')[1] if ':' in name else none -%}
  {%- set ns = namespace(best=none, best_version=0) -%}
  {%- set known = [] -%}
  {%- for exposure in graph.exposures.values() -%}
    {%- set spec = (exposure.config.meta or {}).get('feature_service') or (exposure.meta or {}).get('feature_service') -%}
    {%- if spec is not none -%}
      {%- set service_name = spec.get('name', exposure.name) -%}
      {%- do known.append(service_name ~ ':v' ~ spec.version) -%}
      {%- if exposure.name == name -%}
        {{ return(spec) }}
      {%- endif -%}
      {%- if service_name == base and (version is none or version | lower in ['v' ~ spec.version, spec.version | string]) and spec.version > ns.best_version -%}
        {%- set ns.best = spec -%}
        {%- set ns.best_version = spec.version -%}
      {%- endif -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if ns.best is none -%}
    {{ exceptions.raise_compiler_error("featsync: no feature service '" ~ name ~ "' (known: " ~ (known | sort | join(', ') or 'none') ~ ")") }}
  {%- endif -%}
  {{ return(ns.best) }}
{% endmacro %}


{#- Everything a join needs about the requested features, one entry per feature view in
    first-use order: relation, keys, timestamps, ttl, the (column, output name) pairs. -#}
{% macro _pit_plan(features, feature_service, join_key_map, full_feature_names) %}
  {%- if feature_service is not none -%}
    {%- set requested = featsync.feature_service_spec(feature_service).features -%}
  {%- else -%}
    {%- set requested = [features] if features is string else features -%}
  {%- endif -%}
  {%- set by_view = {} -%}
  {%- set order = [] -%}
  {%- for item in requested -%}
    {%- if ':' not in item -%}
      {{ exceptions.raise_compiler_error("featsync: feature reference '" ~ item ~ "' is not 'feature_view:feature' (or 'feature_view:*')") }}
    {%- endif -%}
    {%- set view_name, feature = item.split(':', 1) -%}
    {%- if view_name not in by_view -%}
      {%- do by_view.update({view_name: []}) -%}
      {%- do order.append(view_name) -%}
    {%- endif -%}
    {%- do by_view[view_name].append(feature) -%}
  {%- endfor -%}

  {%- set plan = [] -%}
  {%- set outputs = {} -%}
  {%- for view_name in order -%}
    {%- set node = featsync.feature_view_node(view_name) -%}
    {%- set meta = node.config.meta.feature_view -%}
    {%- set entities = [meta.entities] if meta.entities is string else meta.entities -%}
    {%- set reserved = entities + [meta.timestamp, meta.get('created_timestamp'), meta.get('valid_to')] -%}
    {%- set declared = node.columns.keys() | list -%}
    {#- Every name below is written into SQL unquoted: refuse unsafe ones (macros/identifiers.sql). -#}
    {%- for column in declared -%}
      {%- do featsync._check_identifier(column, "feature view '" ~ view_name ~ "': column") -%}
    {%- endfor -%}
    {%- for column in reserved if column -%}
      {%- if column not in declared -%}
        {{ exceptions.raise_compiler_error("featsync: feature view '" ~ view_name ~ "': column '" ~ column ~ "' named in its meta is not declared in its columns") }}
      {%- endif -%}
    {%- endfor -%}
    {%- if full_feature_names -%}
      {%- do featsync._check_identifier(view_name, 'feature view name (full_feature_names)') -%}
    {%- endif -%}
    {%- set feature_columns = [] -%}
    {%- for column in declared if column not in reserved -%}
      {%- do feature_columns.append(column) -%}
    {%- endfor -%}
    {%- set chosen = [] -%}
    {%- for feature in by_view[view_name] -%}
      {%- if feature == '*' -%}
        {%- for column in feature_columns if column not in chosen -%}{%- do chosen.append(column) -%}{%- endfor -%}
      {%- elif feature not in feature_columns -%}
        {{ exceptions.raise_compiler_error("featsync: feature view '" ~ view_name ~ "' has no feature '" ~ feature ~ "' (features: " ~ feature_columns | join(', ') ~ ")") }}
      {%- elif feature not in chosen -%}
        {%- do chosen.append(feature) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- set pairs = [] -%}
    {%- for column in chosen -%}
      {%- set output = featsync._check_identifier(view_name ~ '__' ~ column if full_feature_names else column, 'output column') -%}
      {%- if output in outputs -%}
        {{ exceptions.raise_compiler_error("featsync: feature name '" ~ output ~ "' is provided by both feature views '" ~ outputs[output] ~ "' and '" ~ view_name ~ "'; pass full_feature_names=true or select only one") }}
      {%- endif -%}
      {%- do outputs.update({output: view_name}) -%}
      {%- do pairs.append((column, output)) -%}
    {%- endfor -%}
    {#- Tie-break order: event time, created time, then every other non-key column. -#}
    {%- set order_columns = [(meta.timestamp, node.columns[meta.timestamp].data_type)] -%}
    {%- if meta.get('created_timestamp') -%}
      {%- do order_columns.append((meta.created_timestamp, node.columns[meta.created_timestamp].data_type)) -%}
    {%- endif -%}
    {%- for column in declared if column not in entities and column not in [meta.timestamp, meta.get('created_timestamp')] -%}
      {%- do order_columns.append((column, node.columns[column].data_type)) -%}
    {%- endfor -%}
    {%- set select_columns = [] -%}
    {%- for column in entities + [meta.timestamp, meta.get('created_timestamp'), meta.get('valid_to')] + chosen if column and column not in select_columns -%}
      {%- do select_columns.append(column) -%}
    {%- endfor -%}
    {%- set spine_keys = [] -%}
    {%- for key in entities -%}
      {%- do spine_keys.append(featsync._check_identifier(join_key_map.get(key, key), "join_key_map['" ~ key ~ "']")) -%}
    {%- endfor -%}
    {%- set types = {} -%}
    {%- for column in declared -%}{%- do types.update({column: node.columns[column].data_type}) -%}{%- endfor -%}
    {%- do plan.append({
        'index': loop.index0,
        'name': view_name,
        'relation': ref(node.package_name, node.name),
        'entities': entities,
        'spine_keys': spine_keys,
        'timestamp': meta.timestamp,
        'created_timestamp': meta.get('created_timestamp'),
        'valid_to': meta.get('valid_to'),
        'types': types,
        'ttl': featsync.duration_seconds(meta.get('ttl'), "ttl of feature view '" ~ view_name ~ "'"),
        'features': pairs,
        'select_columns': select_columns,
        'order_columns': order_columns,
    }) -%}
  {%- endfor -%}
  {#- A mapped key that no requested view joins on is a typo that would otherwise be ignored. -#}
  {%- set joined = [] -%}
  {%- for step in plan -%}{%- do joined.extend(step.entities) -%}{%- endfor -%}
  {%- for key in join_key_map if key not in joined -%}
    {{ exceptions.raise_compiler_error("featsync: join_key_map names '" ~ key ~ "', which is not an entity of the requested feature views (entities: " ~ joined | unique | join(', ') ~ ")") }}
  {%- endfor -%}
  {{ return(plan) }}
{% endmacro %}
