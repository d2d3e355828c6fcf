{#- Generic test: no two rows share the same values of `columns` (e.g. entity keys + event time). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as featsync_duplicates
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
