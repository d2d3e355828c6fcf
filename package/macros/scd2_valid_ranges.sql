{#- Generic test for SCD2 tables (dbt snapshots and views on them). Guards against known
    dbt snapshot bugs: a version whose valid_to is not after its valid_from, more than one
    current (valid_to NULL) version per key, and versions of one key that overlap. -#}
{% test scd2_valid_ranges(model, unique_key, valid_from='dbt_valid_from', valid_to='dbt_valid_to') %}
with versions as (
    select
        {{ unique_key }} as featsync_key,
        {{ valid_from }} as featsync_from,
        {{ valid_to }} as featsync_to,
        lead({{ valid_from }}) over (partition by {{ unique_key }} order by {{ valid_from }}) as featsync_next_from
    from {{ model }}
)
select featsync_key, featsync_from, featsync_to, 'valid_to is not after valid_from' as featsync_problem
from versions where featsync_to is not null and featsync_to <= featsync_from
union all
select featsync_key, min(featsync_from), null, 'more than one current version'
from versions where featsync_to is null group by featsync_key having count(*) > 1
union all
select featsync_key, featsync_from, featsync_to, 'overlaps the next version'
from versions where featsync_next_from is not null and (featsync_to is null or featsync_to > featsync_next_from)
{% endtest %}
