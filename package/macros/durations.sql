{#-
  Durations in featsync YAML and macro arguments: an integer number of seconds, or a
  string '<n>d', '<n>h', '<n>m' or '<n>s' (e.g. '90d', '12h', '30m'; ASCII digits, no space
  inside). None, '' and 0 mean "no limit" and give none. At most 36500 days (100 years): a
  longer ttl overflows the engines' interval arithmetic. featsync's Python registry accepts
  exactly the same grammar (featsync.registry.parse_duration); tests check both on one
  table of cases.
-#}
{% macro duration_seconds(value, what='duration') %}
  {%- set max_seconds = 36500 * 86400 -%}
  {%- if value is none or value == '' or (value is number and value is not boolean and value == 0) -%}
    {{ return(none) }}
  {%- endif -%}
  {%- if value is boolean -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ " " ~ value ~ " is not a duration") }}
  {%- endif -%}
  {%- if value is number -%}
    {%- if not (value >= 0 and value <= max_seconds) or value != value | int -%}
      {{ exceptions.raise_compiler_error("featsync: " ~ what ~ " must be a whole number of seconds >= 0 and at most 36500d (100 years), got " ~ value) }}
    {%- endif -%}
    {{ return(value | int) }}
  {%- endif -%}
  {%- set text = value | string | trim | lower -%}
  {%- set units = {'d': 86400, 'h': 3600, 'm': 60, 's': 1} -%}
  {%- set number = text[:-1] if text[-1:] in units else text -%}
  {%- set unit = text[-1:] if text[-1:] in units else 's' -%}
  {%- if not number or not (number is string and number.isascii() and number.isdigit()) -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ " '" ~ value ~ "' is not a duration; use seconds or <n>d, <n>h, <n>m, <n>s (e.g. 90d, 12h, 30m)") }}
  {%- endif -%}
  {%- set seconds = (number | int) * units[unit] -%}
  {%- if seconds > max_seconds -%}
    {{ exceptions.raise_compiler_error("featsync: " ~ what ~ " '" ~ value ~ "' is longer than 36500d (100 years), the longest duration featsync takes; leave it out (or 0) for no limit") }}
  {%- endif -%}
  {{ return(none if seconds == 0 else seconds) }}
{% endmacro %}

{#- An interval literal for a whole number of seconds, in the largest exact unit. -#}
{% macro interval_literal(seconds) %}
  {{ return(adapter.dispatch('interval_literal', 'featsync')(seconds)) }}
{% endmacro %}

{% macro default__interval_literal(seconds) -%}
  {%- if seconds % 86400 == 0 -%}interval '{{ seconds // 86400 }} days'
  {%- elif seconds % 3600 == 0 -%}interval '{{ seconds // 3600 }} hours'
  {%- elif seconds % 60 == 0 -%}interval '{{ seconds // 60 }} minutes'
  {%- else -%}interval '{{ seconds }} seconds'
  {%- endif -%}
{%- endmacro %}
