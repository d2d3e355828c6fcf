{#-
  Names featsync writes into SQL unquoted (columns of feature views, feature view names in
  full feature names, on-demand features, the spine's time and key columns) must be plain:
  lower-case letters, digits and _, starting with a letter or _, at most 63 characters,
  and no reserved word of DuckDB, PostgreSQL or Snowflake. Such a name reads the same,
  unquoted, on every engine, so nothing needs quoting and a hostile name never reaches the
  warehouse. Nor may such a name start with `featsync_`: the macros' own helper columns and
  aliases (featsync_asof, featsync_pick, featsync_spine_ts, ...) are named so, and a user's
  column of that name would be taken for one of them. `dbt build` runs without featsync, so the macros check the rule themselves;
  featsync's registry applies the same rule when it loads (featsync.registry.identifiers,
  whose word list a test compares with this one).
-#}

{% macro _check_identifier(name, what) %}
  {%- if name is not string or modules.re.match('^[a-z_][a-z0-9_]*$', name) is none or name | length > 63 -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ ": '" ~ name ~ "' is not a plain SQL name: featsync needs lower-case letters, digits and _, starting with a letter or _, at most 63 characters") }}
  {%- endif -%}
  {%- if name in featsync._reserved_words() -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ ": '" ~ name ~ "' is a reserved SQL word; rename it (e.g. '" ~ name ~ "_value')") }}
  {%- endif -%}
  {%- if name.startswith('featsync_') -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ ": '" ~ name ~ "' starts with 'featsync_', which featsync reserves for the columns its SQL adds; rename it") }}
  {%- endif -%}
  {{ return(name) }}
{% endmacro %}


{% macro _reserved_words() %}
  {{ return([
    'account', 'all', 'alter', 'analyse', 'analyze', 'and', 'anti', 'any', 'array', 'as', 'asc', 'asof',
    'asymmetric', 'at', 'authorization', 'between', 'binary', 'both', 'by', 'case', 'cast', 'check',
    'collate', 'collation', 'column', 'columns', 'concurrently', 'connect', 'connection', 'constraint',
    'create', 'cross', 'current', 'current_catalog', 'current_date', 'current_role', 'current_schema',
    'current_time', 'current_timestamp', 'current_user', 'database', 'default', 'deferrable', 'delete',
    'desc', 'describe', 'distinct', 'do', 'drop', 'else', 'end', 'except', 'exists', 'false', 'fetch',
    'following', 'for', 'foreign', 'freeze', 'from', 'full', 'generated', 'glob', 'grant', 'group',
    'gscluster', 'having', 'ilike', 'in', 'increment', 'initially', 'inner', 'insert', 'intersect', 'into',
    'is', 'isnull', 'issue', 'join', 'lambda', 'lateral', 'leading', 'left', 'like', 'limit', 'localtime',
    'localtimestamp', 'map', 'minus', 'natural', 'not', 'notnull', 'null', 'of', 'offset', 'on', 'only',
    'or', 'order', 'organization', 'outer', 'overlaps', 'pivot', 'pivot_longer', 'pivot_wider', 'placing',
    'positional', 'primary', 'qualify', 'references', 'regexp', 'returning', 'revoke', 'right', 'rlike',
    'row', 'rows', 'sample', 'schema', 'select', 'semi', 'session_user', 'set', 'show', 'similar', 'some',
    'start', 'struct', 'summarize', 'symmetric', 'system_user', 'table', 'tablesample', 'then', 'to',
    'trailing', 'trigger', 'true', 'try_cast', 'tuple', 'union', 'unique', 'unpack', 'unpivot', 'update',
    'user', 'using', 'values', 'variadic', 'verbose', 'view', 'when', 'whenever', 'where', 'window', 'with'
  ]) }}
{% endmacro %}
